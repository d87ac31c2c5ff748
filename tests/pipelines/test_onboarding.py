"""The onboarding flows end to end: real Ray actors, Prefect's harness, Parquet, the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from patchveil.config import PlatformConfig
from patchveil.datasets import list_versions, read_shard, table_to_arrays, verify
from patchveil.errors import PatchveilError
from patchveil.pipelines.onboarding import load_onboarding_file, onboard_tenant, onboard_tenants
from patchveil.pipelines.tenant_handle import call
from patchveil.registry import Registry
from patchveil.tenants.client import Tenant
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages
from tests.faults import start_crashing_tenant_actor
from tests.pipelines.conftest import write_source

DATASET = "disposable-b4-s32"


@pytest.fixture(scope="module")
def onboarded(platform: PlatformConfig, cifar_images: LabeledImages) -> dict[str, Any]:
    """Two tenants onboarded together from one YAML file; the second with augmentation."""
    root = platform.home.parent
    alpha = write_source(cifar_images.subset(np.arange(0, 300)), root / "alpha" / "images.npz")
    beta = write_source(cifar_images.subset(np.arange(300, 500)), root / "beta" / "images.npz")
    config_file = root / "tenants.yaml"
    config_file.write_text(
        "defaults: {cipher: disposable, block_size: 4, shard_size: 100, params: {group: np_cs}}\n"
        "tenants:\n"
        f"  - {{tenant_id: onb-alpha, source: {alpha}}}\n"
        "  - {tenant_id: onb-beta, source: beta/images.npz, augment_variants: 1}\n"
    )
    result = onboard_tenants(str(config_file))
    return {"result": result, "sources": {"onb-alpha": alpha, "onb-beta": beta}}


def snapshot(config: PlatformConfig) -> dict[str, Any]:
    """Everything a failed onboarding must leave unchanged: dataset files and registry rows."""
    registry = Registry.from_config(config)
    files = sorted(
        str(path.relative_to(config.home))
        for path in (config.home / "datasets").rglob("*")
        if path.is_file()
    )
    state = {
        "files": files,
        "tenants": [(t.tenant_id, t.cipher, t.key_version) for t in registry.list_tenants()],
        "versions": [(v.name, v.version) for v in registry.list_dataset_versions()],
        "shards": len(registry.list_shards(status=None)),
        "sources": len(registry.list_sources()),
    }
    registry.close()
    return state


def test_two_tenants_onboard_into_one_new_version(
    platform: PlatformConfig, onboarded: dict[str, Any], ray_session: Any
) -> None:
    result = onboarded["result"]
    assert [d["version"] for d in result["datasets"]] == [1]
    (published,) = list_versions(platform.dataset_root)
    assert published.name == DATASET and published.tenant_ids == ["onb-alpha", "onb-beta"]
    verify(published)
    by_tenant = {entry["tenant_id"]: entry for entry in result["tenants"]}
    assert published.rows == by_tenant["onb-alpha"]["rows"] + by_tenant["onb-beta"]["rows"]
    assert not list((Path(published.uri).parent / "_staging").glob("*"))

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    assert ray.data.read_parquet(published.uri).count() == published.rows

    rows = [table_to_arrays(read_shard(shard.uri)) for shard in published.shards]
    sample_ids = np.concatenate([arrays.sample_ids for arrays in rows])
    assert len(set(sample_ids.tolist())) == len(sample_ids)
    splits = np.concatenate([arrays.splits for arrays in rows])
    tenants = np.concatenate([arrays.tenant_ids for arrays in rows])
    augmented = np.char.find(sample_ids.astype(str), ":aug") >= 0
    for tenant_id, images in (("onb-alpha", 300), ("onb-beta", 200)):
        mine = tenants == tenant_id
        validation = int((mine & (splits == "validation")).sum())
        assert 0.08 * images <= validation <= 0.12 * images  # stratified 10% hold-out
        assert int((mine & ~augmented).sum()) == images
    # Beta asked for one augmented variant of every training image, alpha for none.
    assert not (augmented & (tenants == "onb-alpha")).any()
    beta_train = (tenants == "onb-beta") & (splits == "train")
    assert (beta_train & augmented).sum() == (beta_train & ~augmented).sum()
    assert not (augmented & (splits == "validation")).any()

    registry = Registry.from_config(platform)
    tenants = {tenant.tenant_id: tenant for tenant in registry.list_tenants()}
    assert tenants["onb-alpha"].cipher == "disposable" and tenants["onb-alpha"].image_size == 32
    assert len(registry.list_shards(dataset_name=DATASET, dataset_version=1)) == len(
        published.shards
    )
    assert [source.images for source in registry.list_sources("onb-alpha")] == [300]
    for tenant_id, entry in by_tenant.items():
        assert entry["validation"]["samples"]["train"]["decrypts_exactly"]
        assert registry.verify_api_token(tenant_id, entry["api_token"])
    registry.close()


def test_the_tenant_decrypts_its_rows_exactly(
    platform: PlatformConfig, onboarded: dict[str, Any]
) -> None:
    (published,) = list_versions(platform.dataset_root, DATASET)
    shard = next(s for s in published.shards_of("onb-alpha"))
    arrays = table_to_arrays(read_shard(shard.uri))
    indices = np.array([int(sample.split(":")[1]) for sample in arrays.sample_ids])
    tenant = Tenant("onb-alpha", platform.key_store_for("onb-alpha"))
    decrypted = tenant.decrypt_rows(np.array(arrays.images), shard.key_version, indices)
    plain = np.load(onboarded["sources"]["onb-alpha"])
    assert np.array_equal(decrypted, plain["images"][indices])
    assert np.array_equal(arrays.labels, plain["labels"][indices])
    assert not np.array_equal(arrays.images, plain["images"][indices])


def test_onboarding_the_same_images_again_changes_nothing(
    platform: PlatformConfig, onboarded: dict[str, Any]
) -> None:
    before = snapshot(platform)
    again = onboard_tenant(
        "onb-alpha",
        onboarded["sources"]["onb-alpha"],
        "disposable",
        4,
        params={"group": "np_cs"},
        shard_size=100,
    )
    assert again["status"] == "already_onboarded" and again["dataset_version"] == 1
    assert again["api_token"] is None and again["rows"] == 0
    assert snapshot(platform) == before


def test_a_second_onboarding_with_another_cipher_is_refused(
    platform: PlatformConfig, onboarded: dict[str, Any]
) -> None:
    before = snapshot(platform)
    with pytest.raises(PatchveilError, match="registered with cipher disposable, block size 4"):
        onboard_tenant("onb-alpha", onboarded["sources"]["onb-alpha"], "conventional", 4)
    assert snapshot(platform) == before


def corrupt_image_folder(root: Path) -> str:
    folder = root / "corrupt-images"
    (folder / "cat").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "cat" / "0.png")
    (folder / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return str(folder)


@pytest.mark.parametrize(
    ("tenant_id", "source", "message"),
    [
        ("onb-new", "missing.npz", "does not exist"),
        ("onb-new", "corrupt", "1.png is not a readable image"),
        ("onb-alpha", "small", "encrypts 32×32 images, but .* holds 16×16 images"),
        ("onb-new", "small", "cipher 'plain' does not encrypt"),
        ("bad/id", "missing.npz", "tenant id 'bad/id' is not valid"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    platform: PlatformConfig,
    onboarded: dict[str, Any],
    cifar_images: LabeledImages,
    tenant_id: str,
    source: str,
    message: str,
) -> None:
    root = platform.home.parent
    paths = {
        "missing.npz": str(root / "missing.npz"),
        "corrupt": corrupt_image_folder(root),
        "small": write_source(
            LabeledImages(np.zeros((8, 16, 16, 3), np.uint8), np.arange(8) % 2, ("a", "b")),
            root / "small.npz",
        ),
    }
    cipher = "plain" if "plain" in message else "disposable"
    before = snapshot(platform)
    with pytest.raises(PatchveilError, match=message) as caught:
        onboard_tenant(tenant_id, paths[source], cipher, 4, params={"group": "np_cs"})
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert snapshot(platform) == before


def test_onboarding_file_errors_name_the_problem(tmp_path: Path) -> None:
    config_file = tmp_path / "tenants.json"
    config_file.write_text(json.dumps([{"tenant_id": "x", "source": "s", "cipher": "etc"}]))
    with pytest.raises(PatchveilError, match="missing fields block_size"):
        load_onboarding_file(config_file)
    config_file.write_text(
        json.dumps([{"tenant": "x", "source": "s", "cipher": "etc", "block_size": 4, "colour": 1}])
    )
    with pytest.raises(PatchveilError, match="unknown fields colour"):
        load_onboarding_file(config_file)
    entry = {"tenant": "x", "source": "s.npz", "cipher": "etc", "block_size": 4}
    config_file.write_text(json.dumps([entry, entry]))
    with pytest.raises(PatchveilError, match="more than once: x"):
        load_onboarding_file(config_file)
    config_file.write_text(json.dumps([entry]))
    (request,) = load_onboarding_file(config_file)
    assert request.source == str(tmp_path / "s.npz") and request.validation_fraction == 0.1


def test_a_tenant_actor_killed_mid_shard_does_not_break_onboarding(
    platform: PlatformConfig, onboarded: dict[str, Any], cifar_images: LabeledImages
) -> None:
    root = platform.home.parent
    source = write_source(cifar_images.subset(np.arange(500, 700)), root / "kill" / "images.npz")
    marker = root / "kill" / "crashed"
    actor = start_crashing_tenant_actor(
        "onb-kill", platform.key_store_for("onb-kill"), platform, marker
    )
    first_pid = call(actor.describe.remote()).pid

    result = onboard_tenant(
        "onb-kill", source, "disposable", 4, params={"group": "np_cs"}, shard_size=60
    )

    assert marker.read_text() == str(first_pid)  # it did die half way through a shard
    assert call(actor.describe.remote()).pid != first_pid
    assert result["status"] == "onboarded" and result["dataset_version"] == 2
    published = list_versions(platform.dataset_root, DATASET)[-1]
    verify(published)  # exactly the manifest's shards, checksums intact
    folder = Path(published.uri)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(("_tmp", "."))]
    kill_shards = published.shards_of("onb-kill")
    assert sum(shard.rows for shard in kill_shards) == 200
    sample_ids = [
        sample
        for shard in kill_shards
        for sample in read_shard(shard.uri).column("sample_id").to_pylist()
    ]
    assert len(sample_ids) == len(set(sample_ids)) == 200
    # The key survived: the store still opens it, and it decrypts the new rows.
    key = KeyStore(platform.key_store_for("onb-kill")).load("onb-kill")
    assert key.key_id == call(actor.key_info.remote()).key_id and key.version == 1
    indices = [int(sample.split(":")[1]) for sample in sample_ids[:3]]
    check = call(actor.validate_sample.remote(kill_shards[0].uri, source, indices, 0))
    assert check.decrypts_exactly and check.rows == kill_shards[0].rows
    # Other tenants were carried over unchanged.
    first = list_versions(platform.dataset_root, DATASET)[0]
    assert {s.name: s.sha256 for s in first.shards}.items() <= {
        s.name: s.sha256 for s in published.shards
    }.items()
    assert published.rows == first.rows + 200
