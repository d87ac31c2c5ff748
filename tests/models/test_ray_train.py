"""Ray Train on an encrypted dataset: in-process runs, the trainer's configuration, variants.

Two workers resuming after a failure run after the suite (`tests/infra/test_ray_train_workers.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from patchveil.config import PlatformConfig
from patchveil.datasets import images_from_column
from patchveil.errors import PatchveilError
from patchveil.models.inference import predict
from patchveil.models.ray_train import (
    TRAINER_CONFIG_KEYS,
    build_trainer,
    check_trainer_config,
    fit_shared_model,
    load_trained_model,
    select_phase,
    training_phase_name,
    training_variants,
)
from patchveil.models.training import TrainConfig, pick_device
from patchveil.models.vit import ModelSpec
from tests.helpers import assert_no_key_material
from tests.models.encrypted_dataset import BLOCK_SIZE, IMAGE_SIZE, TENANTS, publish_tiny_dataset

SPEC = ModelSpec(
    variant="standard", size="test", image_size=IMAGE_SIZE, patch_size=BLOCK_SIZE, num_classes=10
)
TRAIN = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3, warmup_epochs=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return publish_tiny_dataset(
        tmp_path_factory.mktemp("datasets"), train_per_tenant=96, validation_per_tenant=32
    )


def test_in_process_run_with_zero_workers(tiny: Any, tmp_path: Path, ray_session: Any) -> None:
    ray_session.data.DataContext.get_current().enable_progress_bars = False
    result = fit_shared_model(
        tiny.version.uri,
        SPEC,
        TrainConfig(epochs=1, batch_size=64, learning_rate=3e-3, warmup_epochs=0.0),
        storage_path=str(tmp_path),
        run_name="in-process",
        num_workers=0,
    )
    assert [entry["epoch"] for entry in result.epochs] == [1]
    assert set(result.tenant_accuracy) == set(TENANTS)
    # The checkpoint was moved from the worker's temporary folder into the run's folder.
    assert Path(result.checkpoint_path) == tmp_path / "in-process" / "checkpoint_epoch=0001"
    assert sorted(path.name for path in (tmp_path / "in-process").iterdir()) == [
        "checkpoint_epoch=0001"
    ]
    model, _ = load_trained_model(result.checkpoint_path)
    images = tiny.validation[TENANTS[0]][0][:4]
    again, _ = load_trained_model(result.checkpoint_path)
    device = pick_device(False)
    assert torch.equal(predict(model, images, device), predict(again, images, device))


def test_trainer_gets_no_key_store_path_and_no_plain_images(
    tiny: Any, tmp_path: Path, ray_session: Any
) -> None:
    trainer = build_trainer(
        tiny.version.uri,
        SPEC,
        TRAIN,
        storage_path=str(tmp_path),
        run_name="inspect",
        num_workers=2,
    )
    config = trainer.train_loop_config
    assert set(config) <= TRAINER_CONFIG_KEYS
    text = json.dumps(config)  # plain JSON: no arrays, no bytes, no objects
    assert json.loads(text) == config
    assert config["dataset_uri"] == tiny.version.uri
    for tenant_id in TENANTS:
        for where in (
            PlatformConfig().key_store_for(tenant_id),
            PlatformConfig().tenant_home(tenant_id),
        ):
            assert str(where) not in text
    assert "key_store" not in text
    assert_no_key_material(list(tiny.keys.values()), text)
    # The datasets read the version's shards only, and what they hold is ciphertext.
    plain = {image.tobytes() for image in tiny.plain_images}
    for dataset in trainer.datasets.values():
        files = {Path(path).name for path in dataset.input_files()}
        assert files <= {Path(uri).name for uri in tiny.version.shard_uris}
        batch = dataset.take_batch(64, batch_format="pyarrow")
        ciphertext = images_from_column(batch.column("image"))
        assert not {image.tobytes() for image in ciphertext} & plain


def test_trainer_config_refuses_anything_but_specs_and_uris() -> None:
    with pytest.raises(PatchveilError, match="key_store"):
        check_trainer_config({"dataset_uri": "/data/v1", "key_store": "/home/acme/keys"})
    with pytest.raises(PatchveilError, match="JSON"):
        check_trainer_config({"dataset_uri": "/data/v1", "groups": np.zeros((2, 2))})


def test_model_must_fit_the_dataset_geometry(tiny: Any, tmp_path: Path) -> None:
    wrong_patch = ModelSpec(
        variant="standard", size="test", image_size=IMAGE_SIZE, patch_size=8, num_classes=10
    )
    with pytest.raises(PatchveilError, match="patch_size=4"):
        build_trainer(
            tiny.version.uri, wrong_patch, TRAIN, storage_path=str(tmp_path), run_name="x"
        )


def test_a_run_the_cluster_cannot_hold_is_refused(
    tiny: Any, tmp_path: Path, ray_session: Any
) -> None:
    with pytest.raises(PatchveilError, match="logical CPUs"):
        fit_shared_model(
            tiny.version.uri,
            SPEC,
            TRAIN,
            storage_path=str(tmp_path),
            run_name="too-big",
            num_workers=16,
        )


def test_tenant_side_variants_are_read_one_per_epoch(tmp_path: Path, ray_session: Any) -> None:
    """acme stored 2 crop/flip variants of each image, bolt none: every epoch still trains on
    one version of each image (acme's original, then variant 1, then 2; bolt's original)."""
    ray_session.data.DataContext.get_current().enable_progress_bars = False
    data = publish_tiny_dataset(
        tmp_path / "datasets",
        train_per_tenant=40,
        validation_per_tenant=16,
        augment_variants={"acme": 2},
    )
    assert training_variants(data.version) == {"acme": 3, "bolt": 1}
    # A hand-made table whose label is the variant: each phase picks the variant it should.
    ids = ["acme:0", "acme:0:aug1", "acme:0:aug2", "bolt:0", "bolt:1"]
    table = pa.table(
        {
            "image": pa.array([b"x"] * 5, pa.binary(1)),
            "label": [0, 1, 2, 0, 0],
            "tenant_id": ["acme"] * 3 + ["bolt"] * 2,
            "key_version": [1] * 5,
            "sample_id": ids,
        }
    )
    for phase, acme_variant in ((0, 0), (1, 1), (2, 2), (3, 0)):
        chosen = select_phase(table, phase, {"acme": 3, "bolt": 1})
        assert chosen.column("label").to_pylist() == [acme_variant, 0, 0]
        assert "sample_id" not in chosen.column_names
    assert training_phase_name(0) == "train" and training_phase_name(2) == "train_aug2"

    result = fit_shared_model(
        data.version.uri,
        SPEC,
        TrainConfig(epochs=3, batch_size=32, learning_rate=3e-3, warmup_epochs=0.0),
        storage_path=str(tmp_path / "runs"),
        run_name="variants",
        num_workers=0,
    )
    assert [entry["train_images"] for entry in result.epochs] == [80, 80, 80]
