"""The checkpoint folder of a trained shared ViT: weights, optimiser state and a JSON summary.

A checkpoint is a folder (local or on object storage) holding `model.pt` (the state dict),
`training_state.pt` (optimiser, scheduler, epoch: what resuming needs) and `checkpoint.json`
(the `ModelSpec`, the `TrainConfig`, the dataset URI and the per-epoch metrics so far). It holds
no key and no image: the model only ever saw ciphertext.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from patchveil.datasets import storage
from patchveil.errors import PatchveilError
from patchveil.models.training import TrainConfig
from patchveil.models.vit import ModelSpec, create_vit_from_spec, load_state_dict_file

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.pt"
TRAINING_STATE_FILE = "training_state.pt"
CHECKPOINT_META_FILE = "checkpoint.json"


def save_checkpoint(
    directory: Path | str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epoch: int,
    model_spec: ModelSpec,
    train_config: TrainConfig,
    history: Sequence[Mapping[str, Any]],
    dataset_uri: str,
) -> Path:
    """Write a checkpoint folder: model weights, optimiser/scheduler state and a JSON summary."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(weights, folder / MODEL_FILE)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch},
        folder / TRAINING_STATE_FILE,
    )
    meta = {
        "patchveil_checkpoint": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model_spec": model_spec.to_json(),
        "train_config": train_config.to_json(),
        "dataset_uri": dataset_uri,
        "history": [dict(entry) for entry in history],
    }
    (folder / CHECKPOINT_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def _parse_meta(text: bytes | str, where: str) -> dict[str, Any]:
    meta = json.loads(text)
    if meta.get("patchveil_checkpoint") != CHECKPOINT_FORMAT:
        raise PatchveilError(
            f"checkpoint {where} has format {meta.get('patchveil_checkpoint')!r}; this version "
            f"of patchveil reads format {CHECKPOINT_FORMAT}"
        )
    return meta


def _not_a_checkpoint(where: str) -> PatchveilError:
    return PatchveilError(
        f"{where} is not a patchveil checkpoint folder (no {CHECKPOINT_META_FILE}); give the "
        "folder a training run reported, e.g. TrainingResult.checkpoint_path"
    )


def read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    """The JSON summary of a local checkpoint folder."""
    meta_file = folder / CHECKPOINT_META_FILE
    if not meta_file.is_file():
        raise _not_a_checkpoint(str(folder))
    return _parse_meta(meta_file.read_text(), str(folder))


def read_training_state(folder: Path) -> dict[str, Any]:
    """Optimiser and scheduler state and the completed epoch, for resuming a run."""
    return torch.load(folder / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)


def load_checkpoint_metadata(checkpoint_path: str) -> dict[str, Any]:
    """The JSON summary of a checkpoint (local path or URI): epoch, specs, per-epoch metrics."""
    meta_uri = storage.join_uri(storage.normalize_uri(checkpoint_path), CHECKPOINT_META_FILE)
    if not storage.exists(meta_uri):
        raise _not_a_checkpoint(checkpoint_path)
    return _parse_meta(storage.read_bytes(meta_uri), checkpoint_path)


def load_trained_model(checkpoint_path: str) -> tuple[torch.nn.Module, ModelSpec]:
    """The trained model (CPU, eval mode) and its `ModelSpec`, from a local path or URI."""
    spec = ModelSpec.from_json(load_checkpoint_metadata(checkpoint_path)["model_spec"])
    model = create_vit_from_spec(spec)
    filesystem, path = storage.resolve(storage.normalize_uri(checkpoint_path))
    if isinstance(filesystem, pafs.LocalFileSystem):
        load_state_dict_file(model, Path(path) / MODEL_FILE)
    else:
        with tempfile.TemporaryDirectory(prefix="patchveil-checkpoint-") as scratch:
            local = Path(scratch) / MODEL_FILE
            local.write_bytes(storage.read_bytes(storage.join_uri(checkpoint_path, MODEL_FILE)))
            load_state_dict_file(model, local)
    model.eval()
    return model, spec
