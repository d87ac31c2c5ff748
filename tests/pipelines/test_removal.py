"""Offboarding: the tenant's shards leave the current version, its actor stops, it is unregistered."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from patchveil.config import PlatformConfig
from patchveil.datasets import list_versions, verify
from patchveil.errors import PatchveilError
from patchveil.pipelines.onboarding import onboard_tenant
from patchveil.pipelines.removal import offboard_tenant
from patchveil.pipelines.tenant_handle import NAMESPACE
from patchveil.pipelines.training import resolve_dataset_version
from patchveil.registry import Registry, UnknownTenantError
from patchveil.tenants.loaders import LabeledImages
from tests.pipelines.conftest import write_source

DATASET = "conventional-b8-s32"


def test_offboarding_publishes_a_version_without_the_tenant(
    platform: PlatformConfig, cifar_images: LabeledImages, ray_session: Any
) -> None:
    root = platform.home.parent
    for number, tenant_id in enumerate(("rm-a", "rm-b")):
        part = cifar_images.subset(np.arange(1200 + 60 * number, 1260 + 60 * number))
        source = write_source(part, root / f"{tenant_id}.npz")
        onboard_tenant(tenant_id, source, "conventional", 8, validation_fraction=0.0)
    before = list_versions(platform.dataset_root, DATASET)[-1]
    assert before.tenant_ids == ["rm-a", "rm-b"]

    result = offboard_tenant("rm-a")

    after = list_versions(platform.dataset_root, DATASET)[-1]
    verify(after)
    assert after.version == before.version + 1 and after.tenant_ids == ["rm-b"]
    assert result["datasets"][0]["version"] == after.version
    registry = Registry.from_config(platform)
    assert [tenant.tenant_id for tenant in registry.list_tenants()] == ["rm-b"]
    assert registry.list_shards(tenant_id="rm-a") == []
    assert result["retired_shards"] == len(registry.list_shards(tenant_id="rm-a", status=None))
    registry.close()
    with pytest.raises(ValueError):
        ray_session.get_actor("tenant-rm-a", namespace=NAMESPACE)

    # The last tenant of a dataset: no empty version, its shards retired all the same.
    last = offboard_tenant("rm-b")
    assert last["datasets"] == [] and last["datasets_left_without_shards"] == [DATASET]
    assert list_versions(platform.dataset_root, DATASET)[-1].version == after.version
    with pytest.raises(UnknownTenantError, match="'rm-b' is not registered"):
        offboard_tenant("rm-b")

    # Training never reads a removed tenant's shards: every version holding them is refused, and
    # a newcomer's version does not carry them on.
    with pytest.raises(PatchveilError, match=r"removed tenant\(s\) rm-b.*onboard a tenant"):
        resolve_dataset_version(platform, DATASET)
    with pytest.raises(PatchveilError, match=r"removed tenant\(s\) rm-a, rm-b"):
        resolve_dataset_version(platform, DATASET, before.version)
    newcomer = cifar_images.subset(np.arange(1400, 1460))
    onboard_tenant("rm-c", write_source(newcomer, root / "rm-c.npz"), "conventional", 8)
    latest = resolve_dataset_version(platform, DATASET)
    assert latest.tenant_ids == ["rm-c"] and latest.version == after.version + 1
    with pytest.raises(PatchveilError, match=f"train on version {latest.version} instead"):
        resolve_dataset_version(platform, DATASET, after.version)
