"""Fit the shared ViT with Ray Train V2 on an encrypted dataset version: ciphertext in, model out.

`train_func_per_worker` is the loop every Ray Train worker runs (the same loop runs in-process
with `num_workers=0`); `fit_shared_model` is the thin driver that builds the training split as a
Ray dataset over the version's Parquet shards and the `TorchTrainer`. Rank 0 validates each
tenant on its held-out rows (encrypted under that tenant's own key), read from the same shards. The trainer's configuration holds only the dataset URI, the model and training
specs and the tenant/key-version list: no key, no key store path, no plain image. The platform
never holds a key, so nothing here could decrypt even if it tried.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import torch

from patchveil.datasets import images_from_column, load_manifest, storage
from patchveil.datasets.manifest import DatasetVersion
from patchveil.datasets.schema import (
    IMAGE,
    KEY_VERSION,
    LABEL,
    SAMPLE_ID,
    SPLIT,
    TENANT_ID,
    augmented_variants,
)
from patchveil.errors import PatchveilError
from patchveil.models.checkpoint import (
    CHECKPOINT_META_FILE,
    MODEL_FILE,
    load_checkpoint_metadata,
    load_trained_model,
    read_checkpoint_meta,
    read_training_state,
    save_checkpoint,
)
from patchveil.models.inference import predict
from patchveil.models.progress import echoed_progress, post_progress
from patchveil.models.training import (
    TrainConfig,
    build_optimizer,
    pick_device,
    train_one_epoch,
    warmup_cosine,
)
from patchveil.models.vit import ModelSpec, create_vit_from_spec, load_state_dict_file

SHUFFLE_BUFFER_ROWS = 10_000
MATERIALIZE_LIMIT_BYTES = 2 * 1024**3

__all__ = [
    "TRAINER_CONFIG_KEYS",
    "TrainingResult",
    "build_trainer",
    "check_trainer_config",
    "fit_shared_model",
    "load_trained_model",
    "read_columns",
    "split_dataset",
    "train_func_per_worker",
]

TRAIN_DATASET = "train"
VALIDATION_SPLIT = "validation"
VALIDATION_BATCH_SIZE = 512
# Everything the per-worker loop may be told; `build_trainer` refuses anything else, so a key
# store path or an image array cannot slip into the trainer (and from there into Ray's object
# store, logs or the run's saved state).
TRAINER_CONFIG_KEYS = frozenset(
    {
        "dataset_uri",
        "model_spec",
        "train_config",
        "groups",
        "validation_tenants",
        "train_rows",
        "train_phases",
        "num_workers",
        "use_gpu",
        "inject_failure_at_epoch",
        "hold_after_epoch",
        "progress_board",
    }
)
# On a cluster whose platform nodes carry the custom resource `platform` (tenant nodes carry
# `tenant:<id>`), every training worker asks for this share of it: training stays off tenant
# nodes by construction, not by how CPUs happen to be free.
PLATFORM_RESOURCE = "platform"
PLATFORM_SHARE = 0.01
_COLUMNS = [IMAGE, LABEL, TENANT_ID, KEY_VERSION]


@dataclass(frozen=True)
class TrainingResult:
    """What a finished training run produced: where its checkpoint is and what it measured."""

    checkpoint_path: str
    epochs: tuple[dict[str, Any], ...]
    tenant_accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final_metrics(self) -> dict[str, Any]:
        return dict(self.epochs[-1]) if self.epochs else {}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingResult:
        return cls(
            checkpoint_path=str(data["checkpoint_path"]),
            epochs=tuple(dict(epoch) for epoch in data["epochs"]),
            tenant_accuracy={str(k): float(v) for k, v in data["tenant_accuracy"].items()},
            seconds=float(data["seconds"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_path": self.checkpoint_path,
            "epochs": [dict(epoch) for epoch in self.epochs],
            "tenant_accuracy": dict(self.tenant_accuracy),
            "seconds": self.seconds,
        }


# -- the per-worker loop -------------------------------------------------------------------------


def _encrypted_batches(
    shard: Any,
    batch_size: int,
    groups: Mapping[tuple[str, int], int],
    shuffle_seed: int | None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of a Ray dataset shard as the dicts `train_one_epoch` takes (uint8 ciphertext)."""
    shuffle = {}
    if shuffle_seed is not None:
        # Shards hold one tenant each: a buffer of many shards' rows mixes tenants (and keys)
        # within a batch, which the shared model needs; 10k CIFAR rows are only 30 MB.
        buffer_rows = max(8 * batch_size, SHUFFLE_BUFFER_ROWS)
        shuffle = {"local_shuffle_buffer_size": buffer_rows, "local_shuffle_seed": shuffle_seed}
    for table in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow", **shuffle):
        # np.array copies the read-only Arrow view so torch gets memory it may own.
        images = np.array(images_from_column(table.column(IMAGE)))
        keys = zip(
            table.column(TENANT_ID).to_pylist(), table.column(KEY_VERSION).to_pylist(), strict=True
        )
        try:
            group = [groups[(tenant_id, int(key_version))] for tenant_id, key_version in keys]
        except KeyError as missing:
            raise PatchveilError(
                f"tenant/key version {missing} is in the data but not in the dataset manifest"
            ) from None
        yield {
            "image": torch.from_numpy(images),
            "label": torch.from_numpy(table.column(LABEL).to_numpy().astype(np.int64)),
            "group": torch.tensor(group, dtype=torch.int64),
        }


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _sum_over_workers(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums over all workers (the values themselves when training alone)."""
    if not _distributed():
        return [float(value) for value in values]
    nccl = torch.distributed.get_backend() == "nccl"
    tensor = torch.tensor(values, dtype=torch.float64, device=device if nccl else "cpu")
    torch.distributed.all_reduce(tensor)
    return tensor.cpu().tolist()


def _max_over_workers(value: float, device: torch.device) -> float:
    if not _distributed():
        return value
    nccl = torch.distributed.get_backend() == "nccl"
    tensor = torch.tensor([value], dtype=torch.float64, device=device if nccl else "cpu")
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


@dataclass(frozen=True)
class _HeldOut:
    """The validation split in memory: ciphertext, labels and each row's tenant index."""

    images: np.ndarray
    labels: np.ndarray
    tenants: np.ndarray


def read_columns(version: DatasetVersion, columns: Sequence[str], split: str | None = None) -> Any:
    """Some columns of a version's shards (of one split, if given) as one Arrow table."""
    filesystem, _ = storage.resolve(version.uri)
    paths = [storage.resolve(uri)[1] for uri in version.shard_uris]
    rows = pads.dataset(paths, format="parquet", filesystem=filesystem)
    return rows.to_table(
        columns=list(columns), filter=None if split is None else pads.field(SPLIT) == split
    )


def _collect_validation(dataset_uri: str, tenant_ids: Sequence[str]) -> _HeldOut:
    """The held-out split, read once from the version's shards; small by design, kept in memory."""
    table = read_columns(load_manifest(dataset_uri), [IMAGE, LABEL, TENANT_ID], VALIDATION_SPLIT)
    index = {tenant_id: position for position, tenant_id in enumerate(tenant_ids)}
    return _HeldOut(
        images=np.array(images_from_column(table.column(IMAGE))),
        labels=table.column(LABEL).to_numpy(),
        tenants=np.array([index[name] for name in table.column(TENANT_ID).to_pylist()], int),
    )


def _validate(
    model: torch.nn.Module,
    held_out: _HeldOut,
    tenant_ids: Sequence[str],
    device: torch.device,
    unpack_nibbles: bool,
) -> dict[str, float]:
    """Accuracy per tenant on its held-out images, each encrypted under that tenant's own key."""
    if len(held_out.images) == 0:
        return {}
    predicted = predict(
        model, held_out.images, device, unpack_nibbles, VALIDATION_BATCH_SIZE
    ).argmax(dim=-1)
    hits = predicted.numpy() == held_out.labels
    correct = np.bincount(held_out.tenants, weights=hits, minlength=len(tenant_ids))
    total = np.bincount(held_out.tenants, minlength=len(tenant_ids))
    return {
        tenant_id: float(correct[position] / total[position])
        for position, tenant_id in enumerate(tenant_ids)
        if total[position] > 0
    }


def _restore(model: torch.nn.Module) -> tuple[int, list[dict[str, Any]], dict[str, Any] | None]:
    """Load the latest checkpoint of this run, if any, into `model` (still on the CPU).

    Returns the completed epoch, the metrics history and the optimiser/scheduler state.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, [], None
    with checkpoint.as_directory() as folder:
        meta = read_checkpoint_meta(Path(folder))
        load_state_dict_file(model, Path(folder) / MODEL_FILE)
        training_state = read_training_state(Path(folder))
    return int(meta["epoch"]), list(meta["history"]), training_state


def _report(
    metrics: dict[str, Any],
    checkpoint_folder: Path | None,
    epoch: int,
    in_process: bool,
    progress_board: str | None,
) -> None:
    """Report an epoch; rank 0 adds its checkpoint folder, which Ray copies to the run storage,
    and posts one progress line (to the driver's board, when it echoes one)."""
    import ray.train

    if checkpoint_folder is None:
        ray.train.report(metrics)
        return
    post_progress(
        progress_board,
        f"epoch {epoch}: loss {metrics.get('train_loss', float('nan')):.3f}, validation "
        f"accuracy {metrics.get('val_accuracy', float('nan')):.1%}, "
        f"{metrics.get('images_per_second', 0):.0f} images/s",
    )
    ray.train.report(
        metrics,
        checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_folder)),
        checkpoint_dir_name=f"checkpoint_epoch={epoch:04d}",
        # In-process runs keep the folder: the driver moves the last one into storage after fit.
        delete_local_checkpoint_after_upload=not in_process,
    )


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop: train on this worker's shard, validate, report, checkpoint."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    spec = ModelSpec.from_json(config["model_spec"])
    train_config = TrainConfig.from_json(config["train_config"])
    groups = {
        (str(tenant_id), int(version)): n for n, (tenant_id, version) in enumerate(config["groups"])
    }
    validation_tenants = [str(tenant_id) for tenant_id in config["validation_tenants"]]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    in_process = int(config["num_workers"]) == 0
    device = pick_device(bool(config["use_gpu"])) if in_process else ray.train.torch.get_device()

    torch.manual_seed(train_config.seed)
    model = create_vit_from_spec(spec)
    completed, history, training_state = _restore(model)
    resumed_from_epoch = completed
    model = ray.train.torch.prepare_model(model, move_to_device=device)
    network = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = build_optimizer(network, train_config)
    # Each worker sees an equal share of the rows (DataConfig splits with equal=True).
    steps_per_epoch = max(
        1, math.ceil(int(config["train_rows"]) / world_size / train_config.batch_size)
    )
    scheduler = warmup_cosine(
        optimizer,
        total_steps=steps_per_epoch * train_config.epochs,
        warmup_steps=round(train_config.warmup_epochs * steps_per_epoch),
    )
    if training_state is not None:
        optimizer.load_state_dict(training_state["optimizer"])
        scheduler.load_state_dict(training_state["scheduler"])

    # With tenant-side augmentation every epoch reads one "phase": one stored variant of each
    # training image (see `training_phase_name`), so an epoch has the same size with or without it.
    phases = int(config.get("train_phases", 1))
    train_shards = [ray.train.get_dataset_shard(training_phase_name(p)) for p in range(phases)]
    # Rank 0 validates on every held-out image: exact per-tenant figures whatever the number of
    # workers; the others wait at the report. Held-out sets are small, so they are read directly
    # from the version's shards once, not streamed through Ray Data every epoch.
    held_out = (
        _collect_validation(str(config["dataset_uri"]), validation_tenants) if rank == 0 else None
    )
    previous_folder: Path | None = None
    for epoch in range(completed + 1, train_config.epochs + 1):
        if config.get("inject_failure_at_epoch") == epoch and resumed_from_epoch == 0:
            raise RuntimeError(
                f"injected failure before epoch {epoch} (inject_failure_at_epoch); the run "
                "should resume from the latest checkpoint"
            )
        # Seeds depend on the epoch, not on how the run got there, so a resumed run trains alike.
        epoch_seed = train_config.seed * 100_003 + epoch * 1_009 + rank
        stats = train_one_epoch(
            model,
            _encrypted_batches(
                train_shards[(epoch - 1) % phases], train_config.batch_size, groups, epoch_seed
            ),
            optimizer,
            scheduler,
            train_config,
            spec.num_classes,
            spec.patch_size,
            device,
            torch.Generator().manual_seed(epoch_seed),
        )
        loss_sum, correct, images = _sum_over_workers(
            [stats.loss * stats.images, stats.accuracy * stats.images, stats.images], device
        )
        epoch_seconds = _max_over_workers(stats.seconds, device)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1.0, images),
            "train_accuracy": correct / max(1.0, images),
            "train_images": int(images),
            "epoch_seconds": epoch_seconds,
            "images_per_second": images / epoch_seconds if epoch_seconds > 0 else 0.0,
            "resumed_from_epoch": resumed_from_epoch,
        }
        if held_out is not None:
            tenant_accuracy = _validate(
                network, held_out, validation_tenants, device, train_config.unpack_nibbles
            )
            if tenant_accuracy:
                metrics["val_accuracy"] = float(np.mean(list(tenant_accuracy.values())))
                metrics.update({f"val_accuracy/{t}": a for t, a in tenant_accuracy.items()})
        history.append(metrics)
        folder = None
        if rank == 0:
            folder = save_checkpoint(
                Path(tempfile.mkdtemp(prefix="patchveil-checkpoint-")),
                network,
                optimizer,
                scheduler,
                epoch=epoch,
                model_spec=spec,
                train_config=train_config,
                history=history,
                dataset_uri=str(config["dataset_uri"]),
            )
        _report(metrics, folder, epoch, in_process, config.get("progress_board"))
        if in_process and previous_folder is not None:
            shutil.rmtree(previous_folder, ignore_errors=True)
        previous_folder = folder
        hold = config.get("hold_after_epoch")
        if hold is not None and int(hold[0]) == epoch and resumed_from_epoch == 0:
            # A fault drill: the checkpoint is in storage and the run is still going, so taking
            # this worker's node down now must end in a resume from this epoch.
            time.sleep(float(hold[1]))


# -- the driver ----------------------------------------------------------------------------------


def _count_rows(version: DatasetVersion) -> dict[tuple[str, str], int]:
    """Rows per (split, tenant_id), from the split and tenant columns only."""
    table = read_columns(version, [SPLIT, TENANT_ID])
    counts = table.group_by([SPLIT, TENANT_ID]).aggregate([([], "count_all")])
    return {
        (split, tenant_id): int(rows)
        for split, tenant_id, rows in zip(
            counts.column(SPLIT).to_pylist(),
            counts.column(TENANT_ID).to_pylist(),
            counts.column("count_all").to_pylist(),
            strict=True,
        )
    }


def training_variants(version: DatasetVersion) -> dict[str, int]:
    """How many versions of each training image a tenant stored: 1 + its augment_variants K."""
    table = read_columns(version, [TENANT_ID, SAMPLE_ID], split=TRAIN_DATASET)
    variants: dict[str, int] = {}
    for tenant_id, variant in zip(
        table.column(TENANT_ID).to_pylist(),
        augmented_variants(table.column(SAMPLE_ID)).tolist(),
        strict=True,
    ):
        variants[tenant_id] = max(variants.get(tenant_id, 1), variant + 1)
    return variants


def training_phase_name(phase: int) -> str:
    """The Ray dataset of one phase: `train` (phase 0, the original images), `train_aug<k>`."""
    return TRAIN_DATASET if phase == 0 else f"{TRAIN_DATASET}_aug{phase}"


def select_phase(table: Any, phase: int, variants: Mapping[str, int]) -> Any:
    """Rows of one phase: variant `phase mod n` of each image of a tenant that stored n."""
    import pyarrow as pa

    wanted = np.array([phase % variants.get(t, 1) for t in table.column(TENANT_ID).to_pylist()])
    keep = augmented_variants(table.column(SAMPLE_ID)) == wanted
    return table.filter(pa.array(keep, type=pa.bool_())).select(_COLUMNS)


def _check_fits(version: DatasetVersion, spec: ModelSpec, train_config: TrainConfig) -> None:
    if spec.image_size != version.image_size or spec.patch_size != version.block_size:
        raise PatchveilError(
            f"dataset {version.name!r} v{version.version} holds {version.image_size}×"
            f"{version.image_size} images in {version.block_size}-pixel blocks; the model needs "
            f"image_size={version.image_size} and patch_size={version.block_size} (one block per "
            f"token), got image_size={spec.image_size}, patch_size={spec.patch_size}"
        )
    channels = 6 if train_config.unpack_nibbles else 3
    if spec.in_chans != channels:
        raise PatchveilError(
            f"unpack_nibbles={train_config.unpack_nibbles} feeds {channels} input channels, but "
            f"the model spec has in_chans={spec.in_chans}; set in_chans={channels}"
        )


def check_trainer_config(config: Mapping[str, Any]) -> None:
    """Refuse a trainer config with keys beyond `TRAINER_CONFIG_KEYS` or non-JSON values."""
    unknown = set(config) - TRAINER_CONFIG_KEYS
    if unknown:
        raise PatchveilError(
            f"trainer config has unexpected key(s) {', '.join(sorted(unknown))}; the training "
            f"side is given only {', '.join(sorted(TRAINER_CONFIG_KEYS))}"
        )
    try:
        round_trip = json.loads(json.dumps(config))
    except (TypeError, ValueError) as error:
        raise PatchveilError(f"trainer config must be plain JSON data: {error}") from None
    if round_trip != dict(config):
        raise PatchveilError("trainer config must be plain JSON data (lists, not tuples)")


def split_dataset(
    uri_or_uris: str | list[str], split: str, extra_columns: Sequence[str] = ()
) -> Any:
    """A lazy Ray dataset of one split's encrypted rows (image, label, tenant_id, key_version,
    and any `extra_columns`)."""
    import ray.data
    from ray.data.expressions import col, lit

    columns = [*_COLUMNS, *extra_columns]
    dataset = ray.data.read_parquet(uri_or_uris, columns=[*columns, SPLIT])
    return dataset.filter(expr=col(SPLIT) == lit(split)).select_columns(columns)


def _training_rows(
    shards: list[str], rows: int, image_size: int, phase: int, variants: Mapping[str, int]
) -> Any:
    """One phase of the training split, mixed across shards; kept in Ray's object store when it
    is small, so that every epoch streams from memory instead of re-reading and re-filtering
    Parquet. Without tenant-side augmentation there is one phase: every training row."""
    if max(variants.values(), default=1) == 1:
        dataset = split_dataset(shards, TRAIN_DATASET)
    else:
        dataset = split_dataset(shards, TRAIN_DATASET, [SAMPLE_ID]).map_batches(
            functools.partial(select_phase, phase=phase, variants=dict(variants)),
            batch_format="pyarrow",
        )
    dataset = dataset.randomize_block_order()
    if rows * image_size * image_size * 3 <= MATERIALIZE_LIMIT_BYTES:
        dataset = dataset.materialize()
    return dataset


def train_log_level() -> str:
    """Ray Train's own log level: the driver's `ray` logger level, so a run started quietly
    (`ensure_ray(log_level="WARNING")`: the demo, the CLI without --verbose) does not print Ray
    Train's INFO lines; never below INFO."""
    level = max(logging.getLogger("ray").getEffectiveLevel(), logging.INFO)
    return logging.getLevelName(level)


def build_trainer(
    dataset_version_uri: str,
    model_spec: ModelSpec,
    train_config: TrainConfig,
    *,
    storage_path: str,
    run_name: str,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 2,
    inject_failure_at_epoch: int | None = None,
    hold_after_epoch: tuple[int, float] | None = None,
    worker_resources: Mapping[str, float] | None = None,
    progress_board: str | None = None,
) -> Any:
    """The `TorchTrainer` for one run over a published dataset version (not started yet).

    `progress_board`: the name of a `progress.ProgressBoard` actor rank 0 posts its per-epoch
    lines to (`fit_shared_model(echo_progress=True)`); without one it writes them to its stdout.

    `worker_resources`: custom Ray resources each worker needs beside its CPUs (e.g.
    `{"platform": 0.01}` keeps workers on platform nodes).
    Fault drills and tests: `inject_failure_at_epoch` makes the first attempt raise before that
    epoch; `hold_after_epoch=(epoch, seconds)` makes it wait that long after that epoch's
    checkpoint, so its node can be taken down mid-run. Either way the run must resume from its
    latest checkpoint.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train import LoggingConfig as TrainLoggingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 0:
        raise PatchveilError(f"num_workers must be 0 (in-process) or more, got {num_workers}")
    version = load_manifest(dataset_version_uri)
    _check_fits(version, model_spec, train_config)
    rows = _count_rows(version)
    variants = training_variants(version)
    phases = max(variants.values(), default=1)
    # Rows of one epoch: one version of each training image.
    train_rows = sum(
        count // variants.get(tenant_id, 1)
        for (split, tenant_id), count in rows.items()
        if split == TRAIN_DATASET
    )
    if train_rows == 0:
        raise PatchveilError(
            f"dataset {version.name!r} v{version.version} has no training rows (split 'train')"
        )
    validation_tenants = sorted(
        tenant_id for (split, tenant_id), count in rows.items() if split == VALIDATION_SPLIT
    )
    config = {
        "dataset_uri": version.uri,
        "model_spec": model_spec.to_json(),
        "train_config": train_config.to_json(),
        "groups": [
            [tenant_id, key_version]
            for tenant_id, key_versions in version.key_versions.items()
            for key_version in key_versions
        ],
        "validation_tenants": validation_tenants,
        "train_rows": train_rows,
        "train_phases": phases,
        "num_workers": num_workers,
        "use_gpu": use_gpu,
        "inject_failure_at_epoch": inject_failure_at_epoch,
        "hold_after_epoch": None if hold_after_epoch is None else list(hold_after_epoch),
        "progress_board": progress_board,
    }
    check_trainer_config(config)
    # The manifest's shard list, not a folder listing: a version is exactly what it announces.
    shards = version.shard_uris
    return TorchTrainer(
        train_func_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **(worker_resources or {})},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.normalize_uri(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=TrainLoggingConfig(log_level=train_log_level()),
        ),
        # Training rows are split equally over the workers (equal batch counts keep DDP in step).
        datasets={
            training_phase_name(phase): _training_rows(
                shards, train_rows, model_spec.image_size, phase, variants
            )
            for phase in range(phases)
        },
        dataset_config=DataConfig(
            datasets_to_split=[training_phase_name(phase) for phase in range(phases)]
        ),
    )


def _check_cluster(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> dict[str, float]:
    """Refuse a run the cluster cannot hold instead of letting it wait forever; return the
    cluster's resources."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    available = ray.cluster_resources()
    # Ray Data needs at least one CPU beside the training workers, or a lazy read never starts.
    cpus_needed = max(num_workers, 0) * cpus_per_worker + 1
    if available.get("CPU", 0) < cpus_needed:
        raise PatchveilError(
            f"{num_workers} training worker(s) of {cpus_per_worker} CPU plus one CPU for Ray Data "
            f"need {cpus_needed:g} logical CPUs; the Ray cluster has {available.get('CPU', 0):g}. "
            "Use fewer workers or start Ray with more (ray.init(num_cpus=...))"
        )
    if use_gpu and available.get("GPU", 0) < max(num_workers, 1):
        raise PatchveilError(
            f"use_gpu with {num_workers} worker(s) needs {max(num_workers, 1)} GPU(s); the Ray "
            f"cluster has {available.get('GPU', 0):g}"
        )
    return dict(available)


def _checkpoint_uri(checkpoint: Any) -> str:
    filesystem = checkpoint.filesystem
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        return str(Path(checkpoint.path).absolute())
    return f"{filesystem.type_name}://{checkpoint.path}"


def _persist_local_checkpoint(local: str, storage_path: str, run_name: str, epoch: int) -> str:
    """Move an in-process run's checkpoint folder into `<storage_path>/<run_name>/`.

    On a local disk the folder is staged beside the target and renamed into place. Object
    stores (S3) cannot rename a folder: there each file is uploaded to its final name, the
    metadata file last, so a checkpoint whose metadata is readable is complete.
    """
    target = storage.join_uri(
        storage.normalize_uri(storage_path), run_name, f"checkpoint_epoch={epoch:04d}"
    )
    filesystem, path = storage.resolve(target)
    exists = filesystem.get_file_info(path).type != pafs.FileType.NotFound
    if isinstance(filesystem, pafs.LocalFileSystem):
        staging = f"{path.rpartition('/')[0]}/{storage.TEMPORARY_PREFIX}{uuid.uuid4().hex}"
        filesystem.create_dir(staging, recursive=True)
        pafs.copy_files(local, staging, destination_filesystem=filesystem)
        if exists:
            filesystem.delete_dir(path)
        filesystem.move(staging, path)
    else:
        if exists:
            filesystem.delete_dir(path)
        files = sorted(
            (item for item in Path(local).rglob("*") if item.is_file()),
            key=lambda item: item.name == CHECKPOINT_META_FILE,
        )
        filesystem.create_dir(path, recursive=True)
        for item in files:
            pafs.copy_files(
                str(item),
                f"{path}/{item.relative_to(local).as_posix()}",
                destination_filesystem=filesystem,
            )
    shutil.rmtree(local, ignore_errors=True)
    return target


def fit_shared_model(
    dataset_version_uri: str,
    model_spec: ModelSpec,
    train_config: TrainConfig,
    *,
    storage_path: str,
    run_name: str,
    num_workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 2,
    inject_failure_at_epoch: int | None = None,
    hold_after_epoch: tuple[int, float] | None = None,
    worker_resources: Mapping[str, float] | None = None,
    echo_progress: bool = False,
) -> TrainingResult:
    """Train the shared ViT on one dataset version with Ray Train; return its checkpoint and metrics.

    `num_workers=0` runs the same loop in this process (no retries there). Ray must be running
    (`ray.init(num_cpus=...)`, or `patchveil.pipelines.ray_runtime`), else a default local Ray
    is started. Without `worker_resources`, workers on a cluster that offers the `platform`
    resource ask for a share of it, so they never land on a tenant's node. `echo_progress`: the
    per-epoch lines of rank 0 are written to this process's stdout (through a board actor), also
    when Ray was started with `log_to_driver=False` (an in-process run writes them anyway).
    """
    start = time.perf_counter()
    available = _check_cluster(num_workers, cpus_per_worker, use_gpu)
    if worker_resources is None and num_workers > 0 and PLATFORM_RESOURCE in available:
        worker_resources = {PLATFORM_RESOURCE: PLATFORM_SHARE}
    with contextlib.ExitStack() as echoing:
        board = (
            echoing.enter_context(echoed_progress(run_name))
            if echo_progress and num_workers > 0
            else None
        )
        trainer = build_trainer(
            dataset_version_uri,
            model_spec,
            train_config,
            storage_path=storage_path,
            run_name=run_name,
            num_workers=num_workers,
            use_gpu=use_gpu,
            cpus_per_worker=cpus_per_worker,
            max_failures=max_failures,
            inject_failure_at_epoch=inject_failure_at_epoch,
            hold_after_epoch=hold_after_epoch,
            worker_resources=worker_resources,
            progress_board=board,
        )
        result = trainer.fit()
    if result.checkpoint is None:
        raise PatchveilError(
            f"training run {run_name!r} finished without a checkpoint (did it train 0 epochs?)"
        )
    if num_workers == 0:
        meta = read_checkpoint_meta(Path(result.checkpoint.path))
        checkpoint_path = _persist_local_checkpoint(
            result.checkpoint.path, storage_path, run_name, int(meta["epoch"])
        )
    else:
        checkpoint_path = _checkpoint_uri(result.checkpoint)
        meta = load_checkpoint_metadata(checkpoint_path)
    history = tuple(dict(entry) for entry in meta["history"])
    prefix = "val_accuracy/"
    final = history[-1] if history else {}
    return TrainingResult(
        checkpoint_path=checkpoint_path,
        epochs=history,
        tenant_accuracy={
            name.removeprefix(prefix): float(value)
            for name, value in final.items()
            if name.startswith(prefix)
        },
        seconds=time.perf_counter() - start,
    )
