"""Checkpoint folders: a saved model reloads to the same logits; foreign folders are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from patchveil.errors import PatchveilError
from patchveil.models.checkpoint import (
    CHECKPOINT_META_FILE,
    load_checkpoint_metadata,
    load_trained_model,
    read_training_state,
    save_checkpoint,
)
from patchveil.models.training import TrainConfig, build_optimizer, warmup_cosine
from patchveil.models.vit import ModelSpec, create_vit_from_spec

SPEC = ModelSpec(variant="position_free", size="test", image_size=16, patch_size=4, num_classes=5)


def saved(folder: Path) -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_vit_from_spec(SPEC)
    config = TrainConfig(epochs=3)
    optimizer = build_optimizer(model, config)
    scheduler = warmup_cosine(optimizer, total_steps=30, warmup_steps=3)
    inputs = torch.randn(4, 3, 16, 16)
    model(inputs).sum().backward()
    optimizer.step()
    scheduler.step()
    save_checkpoint(
        folder,
        model,
        optimizer,
        scheduler,
        epoch=2,
        model_spec=SPEC,
        train_config=config,
        history=[{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}],
        dataset_uri="/data/tiny/v1",
    )
    return model.eval()


def test_round_trip_gives_the_same_logits(tmp_path: Path) -> None:
    model = saved(tmp_path / "checkpoint")
    loaded, spec = load_trained_model(str(tmp_path / "checkpoint"))
    assert spec == SPEC and not loaded.training
    inputs = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, 16, 16))).float()
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))
    meta = load_checkpoint_metadata(f"file://{tmp_path / 'checkpoint'}")
    assert meta["epoch"] == 2 and [entry["epoch"] for entry in meta["history"]] == [1, 2]
    assert TrainConfig.from_json(meta["train_config"]).epochs == 3
    state = read_training_state(tmp_path / "checkpoint")
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 1


def test_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchveilError, match="not a patchveil checkpoint"):
        load_trained_model(str(tmp_path))
    saved(tmp_path / "old")
    meta_file = tmp_path / "old" / CHECKPOINT_META_FILE
    meta_file.write_text(
        json.dumps({**json.loads(meta_file.read_text()), "patchveil_checkpoint": 99})
    )
    with pytest.raises(PatchveilError, match="format 99"):
        load_trained_model(str(tmp_path / "old"))
