"""The offboarding flow: a tenant's shards leave the current dataset versions, then the tenant.

Older dataset versions stay as they were (models trained on them keep their lineage); the
tenant's shards are marked retired. Its key store is the tenant's own and is left alone; its
actor is stopped, so no process keeps the key in memory.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from patchveil.config import PlatformConfig
from patchveil.pipelines.publishing import (
    latest_recorded_version,
    publish_and_record,
    tenant_locks,
    version_summary,
)
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_handle import NAMESPACE, actor_name
from patchveil.registry import Registry


@flow(name="offboard-tenant", persist_result=False)
def offboard_tenant(tenant_id: str) -> dict[str, Any]:
    """Publish each dataset without the tenant's shards, retire them, unregister the tenant."""
    config = PlatformConfig.from_env()
    logger = get_run_logger()
    with Registry.from_config(config) as registry:
        registry.get_tenant(tenant_id)  # an unknown tenant stops here, nothing changed
        published, emptied = [], []
        with tenant_locks(config, [tenant_id]):
            datasets = sorted({s.dataset_name for s in registry.list_shards(tenant_id=tenant_id)})
            for dataset_name in datasets:
                latest = latest_recorded_version(config, registry, dataset_name)
                leaving = [shard.name for shard in latest.shards_of(tenant_id)] if latest else []
                if not leaving:
                    continue
                if len(leaving) == len(latest.shards):
                    # A version needs at least one shard: the dataset keeps its last version, whose
                    # shards are all retired below.
                    emptied.append(dataset_name)
                    continue
                published.append(
                    publish_and_record(config, registry, dataset_name, [], replaced=leaving)
                )
            retired = registry.remove_tenant(tenant_id)
            stop_tenant_actor(tenant_id, config)
    logger.info("tenant %s offboarded; %d shards retired", tenant_id, retired)
    return {
        "tenant_id": tenant_id,
        "datasets": [version_summary(version) for version in published],
        "datasets_left_without_shards": emptied,
        "retired_shards": retired,
    }


def stop_tenant_actor(tenant_id: str, config: PlatformConfig) -> bool:
    """Kill the tenant's actor if one runs; True if it did."""
    import ray

    ensure_ray(config)
    try:
        actor = ray.get_actor(actor_name(tenant_id), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor)
    return True
