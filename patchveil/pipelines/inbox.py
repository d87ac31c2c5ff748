"""Scheduled onboarding: images dropped in a tenant's inbox become new shards of its dataset.

A tenant drops image files into `<home>/tenants/<id>/inbox/<class>/`; on each run its actor
gathers them into batches, encrypts them and, once the new dataset version is published, moves
them to `inbox/processed/`. Unfit files go to `inbox/rejected/` and are reported. No new files,
no new version. `serve_onboarding(cron)` serves the flow as a Prefect deployment on a schedule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.pipelines.onboarding import shard_jobs
from patchveil.pipelines.publishing import (
    default_dataset_name,
    new_staging_uri,
    publish_and_record,
    remove_folder,
    tenant_locks,
    version_summary,
)
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_tasks import (
    archive_inbox_batch,
    encrypt_shard,
    plan_shards,
    scan_inbox,
    start_tenant_actor,
    validate_shards,
)
from patchveil.protocol import RejectedFile, ShardWritten
from patchveil.registry import NewSource, Registry, TenantRecord

DEPLOYMENT_NAME = "patchveil-inbox"


@dataclass
class _Batch:
    """One inbox batch on its way (platform-side bookkeeping only)."""

    tenant_id: str
    source: str
    fingerprint: str
    images: int
    class_names: tuple[str, ...]
    index_offset: int
    dataset_name: str
    already_recorded: bool = False
    shards: list[ShardWritten] = field(default_factory=list)

    def new_source(self) -> NewSource:
        return NewSource(
            tenant_id=self.tenant_id,
            fingerprint=self.fingerprint,
            kind="inbox",
            source=self.source,
            images=self.images,
            first_index=self.index_offset,
            class_names=self.class_names,
        )


@flow(name="ingest-inboxes", persist_result=False)
def ingest_inboxes(shard_size: int = 1000) -> dict[str, Any]:
    """Encrypt every registered tenant's newly dropped images and publish them as new shards."""
    config = PlatformConfig.from_env()
    logger = get_run_logger()
    ensure_ray(config)
    with Registry.from_config(config) as registry:
        tenants = [tenant for tenant in registry.list_tenants() if tenant.status == "active"]
        report: dict[str, dict[str, Any]] = {}
        ready: dict[str, list[_Batch]] = defaultdict(list)
        archived_already: list[_Batch] = []
        published = []
        with tenant_locks(config, [tenant.tenant_id for tenant in tenants]):
            staging = {}
            try:
                for tenant in tenants:
                    try:
                        batches, rejected = collect_batches(
                            config, registry, tenant, staging, shard_size
                        )
                    except PatchveilError as error:
                        report[tenant.tenant_id] = {"error": str(error)}
                        logger.warning("tenant %s: inbox skipped: %s", tenant.tenant_id, error)
                        continue
                    report[tenant.tenant_id] = {
                        "images": 0,
                        "batches": 0,
                        "rejected": [asdict(rejection) for rejection in rejected],
                    }
                    for batch in batches:
                        if batch.already_recorded:  # published before its files were moved
                            archived_already.append(batch)
                        else:
                            ready[batch.dataset_name].append(batch)
                for dataset_name, batches in sorted(ready.items()):
                    version = publish_and_record(
                        config,
                        registry,
                        dataset_name,
                        [written.shard for batch in batches for written in batch.shards],
                        sources=[batch.new_source() for batch in batches],
                    )
                    published.append(version)
                    for batch in batches:
                        archive_inbox_batch(batch.tenant_id, batch.source)
                        report[batch.tenant_id]["images"] += batch.images
                        report[batch.tenant_id]["batches"] += 1
                for batch in archived_already:
                    archive_inbox_batch(batch.tenant_id, batch.source)
            finally:
                for uri in staging.values():
                    remove_folder(uri)
    return {
        "datasets": [version_summary(version) for version in published],
        "tenants": report,
    }


def collect_batches(
    config: PlatformConfig,
    registry: Registry,
    tenant: TenantRecord,
    staging: dict[str, str],
    shard_size: int = 1000,
) -> tuple[list[_Batch], tuple[RejectedFile, ...]]:
    """One tenant's new inbox batches, encrypted into staging and validated."""
    tenant_id = tenant.tenant_id
    sources = registry.list_sources(tenant_id)
    class_names = list(sources[0].class_names) if sources else []
    dataset_name = (
        sources[-1].dataset_name
        if sources
        else default_dataset_name(tenant.cipher, tenant.block_size, tenant.image_size)
    )
    start_tenant_actor(tenant_id, None, config)
    scanned = scan_inbox(tenant_id, class_names)
    index_offset = registry.next_image_index(tenant_id)
    batches = []
    for found in scanned.batches:
        batch = _Batch(
            tenant_id=tenant_id,
            source=found.source,
            fingerprint=found.fingerprint,
            images=found.images,
            class_names=found.class_names,
            index_offset=index_offset,
            dataset_name=dataset_name,
            already_recorded=registry.find_source(tenant_id, found.fingerprint) is not None,
        )
        batches.append(batch)
        if batch.already_recorded:
            continue
        index_offset += batch.images
        plan = plan_shards(tenant_id, batch.source, shard_size, 0.0)
        if dataset_name not in staging:
            staging[dataset_name] = new_staging_uri(config, dataset_name)
        jobs = shard_jobs(
            tenant_id,
            batch.source,
            plan,
            tenant.key_version,
            staging[dataset_name],
            index_offset=batch.index_offset,
        )
        futures = [encrypt_shard.submit(tenant_id, job) for job in jobs]
        batch.shards = [future.result() for future in futures]
        validate_shards(tenant_id, jobs, batch.shards)
    return batches, scanned.rejected


def serve_onboarding(cron: str, name: str = DEPLOYMENT_NAME) -> None:
    """Serve `ingest_inboxes` as a Prefect deployment on a cron schedule (blocks until stopped)."""
    ingest_inboxes.serve(name=name, cron=cron)
