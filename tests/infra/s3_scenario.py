"""Onboarding → training → checkpoint → model card with datasets and checkpoints on S3.

Run by `test_object_storage.py` in a fresh process (`python -m tests.infra.s3_scenario WORKDIR`)
whose environment names the S3 endpoint before Ray starts, as every node of a real deployment
has it: Ray workers inherit it, and no URI carries an endpoint or a credential. Prints one JSON
line with what the test checks.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from patchveil.config import PlatformConfig
from patchveil.datasets import load_manifest, storage
from patchveil.models.ray_train import load_trained_model
from patchveil.pipelines.onboarding import onboard_tenant
from patchveil.pipelines.training import train_shared_model
from patchveil.registry import Registry
from patchveil.tenants.keystore import KeyStore
from tests.helpers import assert_no_key_material

TENANT = "s3-clinic"
IMAGES = 200


def write_source(folder: Path) -> str:
    """A small tenant source: random 32-px images (storage is under test, not accuracy)."""
    generator = np.random.default_rng(0)
    path = folder / "images.npz"
    np.savez(
        path,
        images=generator.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8),
        labels=np.arange(IMAGES, dtype=np.int64) % 10,
        class_names=np.asarray([f"class{label}" for label in range(10)], dtype=np.str_),
    )
    return str(path)


def every_object(root_uri: str) -> dict[str, bytes]:
    """Every object under an S3 prefix, by its URI."""
    import pyarrow.fs as pafs

    filesystem, path = storage.resolve(root_uri)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return {
        f"s3://{info.path}": storage.read_bytes(f"s3://{info.path}")
        for info in infos
        if info.type == pafs.FileType.File
    }


def main(workdir: Path) -> None:
    started = time.perf_counter()
    config = PlatformConfig.from_env()
    assert config.dataset_root.startswith("s3://") and config.checkpoint_root.startswith("s3://")
    onboarded = onboard_tenant(
        TENANT, write_source(workdir), cipher="disposable", block_size=4, shard_size=100
    )
    summary = train_shared_model(
        onboarded["dataset"],
        size="test",
        epochs=1,
        batch_size=64,
        warmup_epochs=0.0,
        # One Ray Train worker: Ray Train itself uploads the checkpoint to S3, as on a cluster.
        num_workers=1,
    )
    trained = time.perf_counter()
    # In-process (`--workers 0`): the driver uploads the last checkpoint itself, file by file
    # (an object store has no folder to rename).
    in_process = train_shared_model(
        onboarded["dataset"],
        size="test",
        epochs=1,
        batch_size=64,
        warmup_epochs=0.0,
        num_workers=0,
        model_name="s3-in-process",
    )
    in_process_model, _ = load_trained_model(in_process["checkpoint_uri"])
    model, spec = load_trained_model(summary["checkpoint_uri"])
    card = json.loads(storage.read_bytes(summary["model_card_uri"]))
    with Registry.from_config(config) as registry:
        (record,) = registry.list_model_versions(summary["model_name"])
        (dataset,) = registry.list_dataset_versions(onboarded["dataset"])
    manifest = load_manifest(dataset.uri)
    objects = {
        **every_object(config.dataset_root),
        **every_object(config.checkpoint_root),
    }
    key = KeyStore(config.key_store_for(TENANT)).load(TENANT)
    assert_no_key_material(key, list(objects.values()))
    local = [
        str(path.relative_to(config.home))
        for folder in ("datasets", "checkpoints")
        for path in (config.home / folder).rglob("*")
    ]
    print(
        json.dumps(
            {
                "dataset_uri": dataset.uri,
                "shard_uris": manifest.shard_uris,
                "checkpoint_uri": summary["checkpoint_uri"],
                "model_card_uri": summary["model_card_uri"],
                "registry_checkpoint_uri": record.checkpoint_uri,
                "card_dataset": card["dataset"]["name"],
                "card_equals_registry": card == record.model_card,
                "model_classes": spec.num_classes,
                "model_in_eval_mode": not model.training,
                "in_process_checkpoint_uri": in_process["checkpoint_uri"],
                "in_process_model_in_eval_mode": not in_process_model.training,
                "objects": sorted(objects),
                "local_files": local,
                "seconds": {
                    "total": time.perf_counter() - started,
                    "to_trained": trained - started,
                    "in_process": in_process["train_seconds"],
                },
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
