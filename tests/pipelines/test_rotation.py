"""Key rotation end to end, and the security sweep: no tenant secret anywhere the platform writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from patchveil.config import PlatformConfig
from patchveil.datasets import list_versions, read_shard, table_to_arrays, verify
from patchveil.pipelines.onboarding import onboard_tenants
from patchveil.pipelines.rotation import rotate_tenant_key, rotated_shard_name
from patchveil.registry import Registry, UnknownTenantError
from patchveil.tenants.client import Tenant
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages
from tests.helpers import assert_no_key_material
from tests.pipelines.conftest import write_source

DATASET = "conventional-b4-s32"


@pytest.fixture(scope="module")
def rotated(platform: PlatformConfig, cifar_images: LabeledImages) -> dict[str, Any]:
    """Two tenants onboarded (same cipher, one dataset), then the first one's key rotated."""
    root = platform.home.parent
    sources = {
        "rot-a": write_source(cifar_images.subset(np.arange(700, 850)), root / "a.npz"),
        "rot-b": write_source(cifar_images.subset(np.arange(850, 950)), root / "b.npz"),
    }
    config_file = root / "tenants.json"
    config_file.write_text(
        "["
        + ",".join(
            f'{{"tenant_id": "{tenant}", "source": "{source}", "cipher": "conventional", '
            '"block_size": 4, "shard_size": 50}'
            for tenant, source in sources.items()
        )
        + "]"
    )
    onboarding = onboard_tenants(str(config_file))
    before = list_versions(platform.dataset_root, DATASET)[-1]
    rotation = rotate_tenant_key("rot-a")
    return {"onboarding": onboarding, "rotation": rotation, "before": before, "sources": sources}


def test_rotation_publishes_a_new_version_under_the_new_key(
    platform: PlatformConfig, rotated: dict[str, Any]
) -> None:
    rotation, before = rotated["rotation"], rotated["before"]
    assert rotation["key_version"] == 2 and rotation["previous_key_version"] == 1
    assert [d["version"] for d in rotation["datasets"]] == [before.version + 1]
    after = list_versions(platform.dataset_root, DATASET)[-1]
    verify(after)
    assert after.parent_version == before.version and after.rows == before.rows
    assert after.key_versions == {"rot-a": [2], "rot-b": [1]}
    # The other tenant's shards are the very same files.
    assert {s.name: s.sha256 for s in before.shards_of("rot-b")} == {
        s.name: s.sha256 for s in after.shards_of("rot-b")
    }
    assert {s.name for s in after.shards_of("rot-a")} == {
        rotated_shard_name(s.name, 2) + ".parquet" for s in before.shards_of("rot-a")
    }

    registry = Registry.from_config(platform)
    assert registry.get_tenant("rot-a").key_version == 2
    retired = registry.list_shards(tenant_id="rot-a", status="retired")
    assert retired and {shard.key_version for shard in retired} == {1}
    active = registry.list_shards(tenant_id="rot-a", status="active")
    assert {shard.key_version for shard in active} == {2}
    assert rotation["retired_shards"] == len(retired)
    assert all(s.status == "active" for s in registry.list_shards(tenant_id="rot-b", status=None))
    registry.close()


def test_rotated_images_decrypt_with_the_new_key_only(
    platform: PlatformConfig, rotated: dict[str, Any]
) -> None:
    after = list_versions(platform.dataset_root, DATASET)[-1]
    shard = after.shards_of("rot-a")[0]
    arrays = table_to_arrays(read_shard(shard.uri))
    indices = np.array([int(sample.split(":")[1]) for sample in arrays.sample_ids])
    plain = np.load(rotated["sources"]["rot-a"])["images"][indices]
    tenant = Tenant("rot-a", platform.key_store_for("rot-a"))
    assert np.array_equal(tenant.decrypt_rows(np.array(arrays.images), 2, indices), plain)
    assert not np.array_equal(tenant.decrypt_rows(np.array(arrays.images), 1, indices), plain)


def test_rotating_an_unknown_tenant_is_refused(platform: PlatformConfig) -> None:
    versions = [(v.name, v.version) for v in list_versions(platform.dataset_root)]
    with pytest.raises(UnknownTenantError, match="tenant 'nobody' is not registered"):
        rotate_tenant_key("nobody")
    assert [(v.name, v.version) for v in list_versions(platform.dataset_root)] == versions


def test_no_tenant_secret_anywhere_the_platform_writes(
    platform: PlatformConfig,
    rotated: dict[str, Any],
    prefect_harness: dict[str, Path],
    ray_session: Any,
) -> None:
    keys = [
        KeyStore(platform.key_store_for(tenant_id)).load(tenant_id, version)
        for tenant_id in ("rot-a", "rot-b")
        for version in KeyStore(platform.key_store_for(tenant_id)).versions(tenant_id)
    ]
    assert len(keys) == 3  # rot-a v1 and v2, rot-b v1
    dataset_root = Path(platform.dataset_root)
    registry_db = Path(platform.registry_url.removeprefix("sqlite:///"))
    ray_logs = Path(ray_session._private.worker._global_node.get_logs_dir_path())
    places = [dataset_root, registry_db, prefect_harness["home"], prefect_harness["database"]]
    places += [ray_logs] + ([platform.log_dir] if platform.log_dir.exists() else [])
    # Parquet pages are compressed: search the decoded columns and metadata too.
    decoded: list[Any] = []
    for path in sorted(dataset_root.rglob("*.parquet")):
        arrays = table_to_arrays(pq.read_table(path))
        decoded += [np.asarray(arrays.images), "\n".join(arrays.sample_ids)]
        decoded.append(repr(pq.read_schema(path).metadata))
    flow_results = [repr(rotated["onboarding"]), repr(rotated["rotation"])]
    assert_no_key_material(keys, [*places, *decoded, *flow_results])
    # The API tokens were shown once, to the caller, and stored nowhere in clear.
    tokens = [entry["api_token"] for entry in rotated["onboarding"]["tenants"]]
    for place in [registry_db, prefect_harness["home"], prefect_harness["database"]]:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for path in files:
            data = path.read_bytes()
            assert not any(token.encode() in data for token in tokens), path
