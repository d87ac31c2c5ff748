"""The key-rotation flow: a tenant's new key version, its shards re-encrypted, a new version.

The old shards stay in the old dataset versions (models trained on them keep their lineage) and
are marked retired in the registry only once the new version is published and recorded. A
rotation that stopped half way resumes with the key version it had already created.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger

from patchveil.config import PlatformConfig
from patchveil.pipelines.publishing import (
    latest_recorded_version,
    new_staging_uri,
    publish_and_record,
    remove_folder,
    tenant_locks,
    version_summary,
)
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_tasks import (
    ValidationError,
    reencrypt_shard,
    rotate_key,
    start_tenant_actor,
)
from patchveil.registry import Registry

_KEY_SUFFIX = re.compile(r"-k\d+$")


def rotated_shard_name(shard_name: str, key_version: int) -> str:
    """`<stem>-k<old>.parquet` becomes `<stem>-k<new>` (the suffix is added if missing)."""
    stem = shard_name.removesuffix(".parquet")
    return f"{_KEY_SUFFIX.sub('', stem)}-k{key_version}"


@flow(name="rotate-tenant-key", persist_result=False)
def rotate_tenant_key(tenant_id: str, key_store: str | None = None) -> dict[str, Any]:
    """Rotate a tenant's key and re-encrypt its shards into a new version of each dataset."""
    config = PlatformConfig.from_env()
    logger = get_run_logger()
    ensure_ray(config)
    with Registry.from_config(config) as registry:
        tenant = registry.get_tenant(tenant_id)  # an unknown tenant stops here, nothing changed
        published = []
        with tenant_locks(config, [tenant_id]):
            start_tenant_actor(tenant_id, key_store, config)
            key, resumed = rotate_key(tenant_id, tenant.key_version)
            new_version = key.key_version
            datasets = sorted(
                {shard.dataset_name for shard in registry.list_shards(tenant_id=tenant_id)}
            )
            for dataset_name in datasets:
                latest = latest_recorded_version(config, registry, dataset_name)
                old = (
                    [s for s in latest.shards_of(tenant_id) if s.key_version < new_version]
                    if latest
                    else []
                )
                if not old:
                    continue
                staging_uri = new_staging_uri(config, dataset_name)
                try:
                    futures = [
                        reencrypt_shard.submit(
                            tenant_id,
                            shard.uri,
                            staging_uri,
                            rotated_shard_name(shard.name, new_version),
                        )
                        for shard in old
                    ]
                    new = [future.result().shard for future in futures]
                    for before, after in zip(old, new, strict=True):
                        if after.rows != before.rows or after.key_version != new_version:
                            raise ValidationError(
                                f"re-encrypting {before.name} gave {after.rows} rows under key "
                                f"version {after.key_version}, expected {before.rows} under "
                                f"{new_version}; nothing was published"
                            )
                    version = publish_and_record(
                        config, registry, dataset_name, new, replaced=[shard.name for shard in old]
                    )
                finally:
                    remove_folder(staging_uri)
                published.append(version)
                logger.info(
                    "tenant %s: %d shards of %s re-encrypted under key version %d (version %d)",
                    tenant_id,
                    len(new),
                    dataset_name,
                    new_version,
                    version.version,
                )
            registry.upsert_tenant(
                tenant_id,
                cipher=tenant.cipher,
                block_size=tenant.block_size,
                image_size=tenant.image_size,
                key_version=new_version,
            )
            superseded = [
                shard.uri
                for shard in registry.list_shards(tenant_id=tenant_id)
                if shard.key_version < new_version
            ]
            retired = registry.retire_shards(superseded) if superseded else 0
    return {
        "tenant_id": tenant_id,
        "key_version": new_version,
        "previous_key_version": tenant.key_version,
        "resumed": resumed,
        "datasets": [version_summary(version) for version in published],
        "retired_shards": retired,
    }
