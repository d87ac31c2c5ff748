"""Ray Train with two workers on an encrypted dataset: a failure before epoch 2 resumes from the
epoch-1 checkpoint; validation per tenant on its own key. Runs after the suite, in `.ci/run`
(two training workers on 2 cores are the slowest minute of the suite)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.models.checkpoint import CHECKPOINT_META_FILE, MODEL_FILE, TRAINING_STATE_FILE
from patchveil.models.inference import predict
from patchveil.models.ray_train import (
    VALIDATION_BATCH_SIZE,
    TrainingResult,
    fit_shared_model,
    load_trained_model,
)
from patchveil.models.training import TrainConfig, pick_device
from patchveil.models.vit import ModelSpec
from tests.models.encrypted_dataset import TENANTS, publish_tiny_dataset
from tests.models.test_ray_train import SPEC, TRAIN
from tests.services import INFRA_TESTS_ENV

pytestmark = pytest.mark.skipif(
    os.environ.get(INFRA_TESTS_ENV) != "1",
    reason=f"two Ray Train workers: set {INFRA_TESTS_ENV}=1 (as .ci/run does) to run it",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return publish_tiny_dataset(
        tmp_path_factory.mktemp("datasets"), train_per_tenant=96, validation_per_tenant=32
    )


@pytest.fixture(scope="module")
def two_worker_run(
    tiny: Any, tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> tuple[TrainingResult, Path, str]:
    """Two workers, two epochs; the first attempt dies before epoch 2 and must resume. The
    per-epoch lines are echoed on this process's stdout (Ray forwards no worker output here)."""
    ray_session.data.DataContext.get_current().enable_progress_bars = False
    storage = tmp_path_factory.mktemp("checkpoints")
    echoed = io.StringIO()
    with contextlib.redirect_stdout(echoed):
        result = fit_shared_model(
            tiny.version.uri,
            SPEC,
            TRAIN,
            storage_path=str(storage),
            run_name="two-workers",
            num_workers=2,
            max_failures=1,
            inject_failure_at_epoch=2,
            echo_progress=True,
        )
    return result, storage, echoed.getvalue()


def test_two_workers_train_checkpoint_and_resume_after_a_failure(
    two_worker_run: tuple[TrainingResult, Path, str],
) -> None:
    result, storage, _ = two_worker_run
    assert [entry["epoch"] for entry in result.epochs] == [1, 2]
    # Epoch 2 ran in the second attempt, which started from the epoch-1 checkpoint; a restart
    # from scratch would have hit the injected failure again and exhausted max_failures=1.
    assert [entry["resumed_from_epoch"] for entry in result.epochs] == [0, 1]
    assert result.epochs[1]["train_loss"] < result.epochs[0]["train_loss"]
    checkpoint = Path(result.checkpoint_path)
    assert checkpoint.parent == storage / "two-workers"
    for name in (MODEL_FILE, TRAINING_STATE_FILE, CHECKPOINT_META_FILE):
        assert (checkpoint / name).is_file()
    meta = json.loads((checkpoint / CHECKPOINT_META_FILE).read_text())
    assert meta["epoch"] == 2
    assert ModelSpec.from_json(meta["model_spec"]) == SPEC
    assert TrainConfig.from_json(meta["train_config"]) == TRAIN
    for entry in result.epochs:
        assert entry["images_per_second"] > 0 and entry["epoch_seconds"] > 0
        per_tenant = [entry[f"val_accuracy/{tenant_id}"] for tenant_id in TENANTS]
        assert entry["val_accuracy"] == pytest.approx(np.mean(per_tenant))
    assert set(result.tenant_accuracy) == set(TENANTS)


def test_validation_is_per_tenant_on_its_own_key(
    tiny: Any, two_worker_run: tuple[TrainingResult, Path, str]
) -> None:
    """The reported accuracy of each tenant is the model's accuracy on that tenant's held-out
    images encrypted under its own key (recomputed here from the reloaded checkpoint)."""
    result, _, _ = two_worker_run
    model, spec = load_trained_model(result.checkpoint_path)
    assert spec == SPEC
    for tenant_id, (ciphertext, labels) in tiny.validation.items():
        logits = predict(model, ciphertext, pick_device(False), False, VALIDATION_BATCH_SIZE)
        accuracy = float((logits.argmax(dim=-1).numpy() == labels).mean())
        assert accuracy == pytest.approx(result.tenant_accuracy[tenant_id])


def test_rank_zero_echoes_one_line_per_epoch(
    two_worker_run: tuple[TrainingResult, Path, str],
) -> None:
    """Rank 0's lines reach the driver through the progress board (the session's Ray starts
    with log_to_driver=False); the resumed attempt goes on posting to the same board."""
    _, _, echoed = two_worker_run
    epochs = [line.split(":")[0] for line in echoed.splitlines() if line.startswith("epoch ")]
    assert epochs == ["epoch 1", "epoch 2"], echoed
