"""Scheduled onboarding: images dropped in a tenant's inbox become shards of a new version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from patchveil.config import PlatformConfig
from patchveil.datasets import list_versions, read_shard, table_to_arrays, verify
from patchveil.pipelines import inbox
from patchveil.pipelines.inbox import ingest_inboxes, serve_onboarding
from patchveil.pipelines.onboarding import onboard_tenant
from patchveil.registry import Registry
from patchveil.tenants.client import Tenant
from patchveil.tenants.loaders import LabeledImages
from tests.pipelines.conftest import write_source

TENANT = "inbox-a"
DATASET = "etc-b4-s32"


@pytest.fixture(scope="module")
def onboarded(platform: PlatformConfig, cifar_images: LabeledImages) -> LabeledImages:
    part = cifar_images.subset(np.arange(950, 1050))
    source = write_source(part, platform.home.parent / "inbox-a.npz")
    onboard_tenant(TENANT, source, "etc", 4, validation_fraction=0.0)
    return part


def drop(folder: Path, name: str, image: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)


def test_dropped_images_are_appended_and_archived(
    platform: PlatformConfig, onboarded: LabeledImages, cifar_images: LabeledImages
) -> None:
    inbox_folder = platform.inbox_for(TENANT)
    new = cifar_images.subset(np.arange(1100, 1112))
    for number, (image, label) in enumerate(zip(new.images, new.labels, strict=True)):
        drop(inbox_folder / new.class_names[label], f"{number:02d}.png", image)
    numbered = np.full((32, 32, 3), 7, np.uint8)
    drop(inbox_folder / "3", "by-number.png", numbered)  # an integer label works too
    drop(inbox_folder / "cat", "small.png", np.zeros((16, 16, 3), np.uint8))
    drop(inbox_folder / "unicorn", "u.png", new.images[0])
    (inbox_folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = list_versions(platform.dataset_root, DATASET)[-1]

    result = ingest_inboxes()

    report = result["tenants"][TENANT]
    assert report["images"] == 13 and report["batches"] == 1
    assert sorted(Path(r["file"]).name for r in report["rejected"]) == [
        "broken.png",
        "small.png",
        "u.png",
    ]
    after = list_versions(platform.dataset_root, DATASET)[-1]
    verify(after)
    assert after.version == before.version + 1 and after.rows == before.rows + 13
    new_shards = [s for s in after.shards if s.name not in {b.name for b in before.shards}]
    arrays = table_to_arrays(read_shard(new_shards[0].uri))
    indices = np.array([int(sample.split(":")[1]) for sample in arrays.sample_ids])
    assert indices.min() >= len(onboarded)  # new images get new indices (and nonces)
    tenant = Tenant(TENANT, platform.key_store_for(TENANT))
    decrypted = tenant.decrypt_rows(np.array(arrays.images), 1, indices)
    expected = {
        image.tobytes(): int(label) for image, label in zip(new.images, new.labels, strict=True)
    }
    expected[numbered.tobytes()] = 3
    found = {
        image.tobytes(): int(label) for image, label in zip(decrypted, arrays.labels, strict=True)
    }
    assert found == expected
    assert sorted(p.name for p in (inbox_folder / "processed").rglob("*.png")) == sorted(
        [f"{n:02d}.png" for n in range(12)] + ["by-number.png"]
    )
    assert len(list((inbox_folder / "rejected").rglob("*.png"))) == 3
    assert not list((inbox_folder / "processing").iterdir())
    registry = Registry.from_config(platform)
    assert [source.kind for source in registry.list_sources(TENANT)] == ["onboarding", "inbox"]
    registry.close()

    # Nothing new dropped: no new version.
    again = ingest_inboxes()
    assert again["datasets"] == [] and again["tenants"][TENANT]["images"] == 0
    assert list_versions(platform.dataset_root, DATASET)[-1].version == after.version


def test_serve_onboarding_serves_the_inbox_flow_on_a_cron(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(inbox.ingest_inboxes, "serve", lambda **options: served.update(options))
    serve_onboarding("*/10 * * * *")
    assert served == {"name": "patchveil-inbox", "cron": "*/10 * * * *"}
