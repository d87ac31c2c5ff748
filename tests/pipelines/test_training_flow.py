"""The training flow end to end: a published encrypted version → Ray Train → card → registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.config import PlatformConfig
from patchveil.datasets import publish_version
from patchveil.errors import PatchveilError
from patchveil.models.ray_train import load_trained_model
from patchveil.models.reference import REFERENCE_FILE, load_reference_embeddings
from patchveil.models.vit import ModelSpec
from patchveil.pipelines.training import (
    MODEL_CARD_NAME,
    model_spec_for,
    resolve_dataset_version,
    train_shared_model,
)
from patchveil.registry import Registry
from tests.helpers import assert_no_key_material
from tests.models.encrypted_dataset import CIPHER, TENANTS, publish_tiny_dataset

DATASET = "tiny-train"


@pytest.fixture(scope="module")
def trained(platform: PlatformConfig) -> dict[str, Any]:
    """Two tenants' encrypted shards, published and recorded; one short in-process training."""
    tiny = publish_tiny_dataset(
        platform.dataset_root, DATASET, train_per_tenant=64, validation_per_tenant=32
    )
    registry = Registry.from_config(platform)
    for tenant_id in TENANTS:
        registry.upsert_tenant(tenant_id, cipher=CIPHER, block_size=4, image_size=32)
    registry.record_manifest(tiny.version)
    registry.close()
    summary = train_shared_model(
        DATASET, size="test", epochs=1, batch_size=64, warmup_epochs=0.0, num_workers=0
    )
    return {"tiny": tiny, "summary": summary}


def test_flow_records_a_model_version_with_its_card(
    trained: dict[str, Any], platform: PlatformConfig
) -> None:
    summary, tiny = trained["summary"], trained["tiny"]
    assert json.loads(json.dumps(summary)) == summary
    assert summary["model_name"] == f"{DATASET}-standard-test"
    assert summary["model_version"] == 1
    assert summary["dataset"] == {"name": DATASET, "version": 1, "uri": tiny.version.uri}
    assert set(summary["tenant_accuracy"]) == set(TENANTS)
    checkpoint = Path(summary["checkpoint_uri"])
    assert checkpoint.is_relative_to(Path(platform.checkpoint_root))
    card_file = Path(summary["model_card_uri"])
    assert card_file == checkpoint.parent / MODEL_CARD_NAME
    card = json.loads(card_file.read_text())
    assert card["dataset"]["name"] == DATASET and card["dataset"]["version"] == 1
    assert (card["dataset"]["cipher"], card["dataset"]["block_size"]) == (CIPHER, 4)
    assert card["dataset"]["image_size"] == 32
    assert ModelSpec.from_json(card["model_spec"]).patch_size == 4
    assert card["train_config"]["epochs"] == 1
    assert card["tenant_accuracy"] == summary["tenant_accuracy"]
    assert [epoch["epoch"] for epoch in card["epochs"]] == [1]
    for field in ("commit", "command", "machine", "date"):
        assert card[field]
    registry = Registry.from_config(platform)
    (record,) = registry.list_model_versions(summary["model_name"])
    registry.close()
    assert (record.dataset_name, record.dataset_version) == (DATASET, 1)
    assert record.checkpoint_uri == summary["checkpoint_uri"]
    assert record.model_card == card
    model, spec = load_trained_model(record.checkpoint_uri)
    assert spec.num_classes == 10 and not model.training


def test_flow_leaves_reference_embeddings_for_the_endpoint(trained: dict[str, Any]) -> None:
    """The endpoint's defence and monitor fit to the model's embeddings of held-out rows."""
    summary = trained["summary"]
    reference = load_reference_embeddings(summary["checkpoint_uri"])
    assert reference is not None and reference.dtype == np.float32
    model, _ = load_trained_model(summary["checkpoint_uri"])
    assert reference.shape == (2 * 32, model.num_features)  # every validation row of 2 tenants
    assert Path(summary["reference_embeddings_uri"]).name == REFERENCE_FILE


def test_nothing_the_flow_wrote_holds_key_material(
    trained: dict[str, Any], platform: PlatformConfig
) -> None:
    keys = list(trained["tiny"].keys.values())
    assert_no_key_material(keys, Path(platform.checkpoint_root))
    assert_no_key_material(keys, json.dumps(trained["summary"]))


def test_newest_published_version_is_the_default(platform: PlatformConfig) -> None:
    first = publish_tiny_dataset(
        platform.dataset_root, "versions", train_per_tenant=4, validation_per_tenant=2
    ).version
    second = publish_version(
        platform.dataset_root, "versions", 2, [], carried_shards=first.shards, parent_version=1
    )
    assert resolve_dataset_version(platform, "versions").version == 2
    assert resolve_dataset_version(platform, "versions", 1).uri == first.uri
    assert model_spec_for(second, "position_free", "test").num_classes >= 2
    with pytest.raises(PatchveilError, match="no published version"):
        resolve_dataset_version(platform, "never-onboarded")
