"""Prefect tasks that ask a tenant's actor to do tenant-side work; they see only its answers.

Every task retries when Ray fails under it (an actor process died and restarts, a node went
away) and never retries a user error (`PatchveilError`): that would fail the same way again.
Results are the typed messages of `patchveil.protocol` and are not persisted (nothing here is worth keeping in Prefect's
result storage, and the less it holds the less it can leak).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.pipelines.tenant_handle import call, existing_tenant_actor, tenant_actor
from patchveil.protocol import (
    ActorDescription,
    InboxScan,
    KeyInfo,
    SampleCheck,
    ShardJob,
    ShardPlan,
    ShardWritten,
    SourceInfo,
)

TASK_RETRIES = 3
RETRY_DELAY_SECONDS = 1


class ValidationError(PatchveilError):
    """Encrypted shards failed a check: wrong row counts, inexact decryption, or plain pixels."""


def retry_unless_user_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry infrastructure failures, not the user's mistakes."""
    try:
        state.result()
    except PatchveilError:
        return False
    except BaseException:
        return True
    return True


_OPTIONS: dict[str, Any] = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": RETRY_DELAY_SECONDS,
    "retry_condition_fn": retry_unless_user_error,
    "persist_result": False,
    "cache_policy": NO_CACHE,
}


@task(name="start-tenant-actor", task_run_name="start actor of {tenant_id}", **_OPTIONS)
def start_tenant_actor(
    tenant_id: str, key_store: str | None, config: PlatformConfig
) -> ActorDescription:
    """Start (or find) the tenant's actor; it opens the key store itself."""
    return call(tenant_actor(tenant_id, key_store, config).describe.remote())


@task(name="inspect-source", task_run_name="inspect source of {tenant_id}", **_OPTIONS)
def inspect_source(tenant_id: str, source: str) -> SourceInfo:
    """Image count, size, class names and fingerprint of a tenant's source."""
    return call(existing_tenant_actor(tenant_id).inspect_source.remote(source))


@task(name="ensure-key", task_run_name="ensure key of {tenant_id}", **_OPTIONS)
def ensure_key(
    tenant_id: str,
    cipher: str,
    block_size: int,
    image_size: int,
    params: dict[str, Any] | None,
) -> KeyInfo:
    """Create the tenant's key if it has none; refuse a key for another cipher."""
    actor = existing_tenant_actor(tenant_id)
    return call(actor.ensure_key.remote(cipher, block_size, image_size, params))


@task(name="plan-shards", task_run_name="plan shards of {tenant_id}", **_OPTIONS)
def plan_shards(
    tenant_id: str, source: str, shard_size: int, validation_fraction: float, seed: int = 0
) -> ShardPlan:
    """The tenant's train/validation split of a source, as image positions per shard."""
    actor = existing_tenant_actor(tenant_id)
    return call(actor.plan_shards.remote(source, shard_size, validation_fraction, seed))


@task(name="encrypt-shard", task_run_name="encrypt {job.shard_name}", **_OPTIONS)
def encrypt_shard(tenant_id: str, job: ShardJob) -> ShardWritten:
    """The actor encrypts the job's images and writes its shard."""
    return call(existing_tenant_actor(tenant_id).encrypt_shard.remote(job))


@task(name="reencrypt-shard", task_run_name="re-encrypt {shard_name}", **_OPTIONS)
def reencrypt_shard(
    tenant_id: str, shard_uri: str, folder_uri: str, shard_name: str
) -> ShardWritten:
    """The actor re-encrypts one of its shards under its newest key version."""
    actor = existing_tenant_actor(tenant_id)
    return call(actor.reencrypt_shard.remote(shard_uri, folder_uri, shard_name))


@task(name="rotate-key", task_run_name="rotate key of {tenant_id}", **_OPTIONS)
def rotate_key(tenant_id: str, registered_key_version: int) -> tuple[KeyInfo, bool]:
    """A new key version, unless the key store already holds one newer than the registry's
    (an earlier rotation stopped half way, or the tenant rotated by itself): then that one.
    Returns the key and whether it was such a resumed rotation."""
    actor = existing_tenant_actor(tenant_id)
    current: KeyInfo = call(actor.key_info.remote())
    if not current.has_key:
        raise PatchveilError(f"tenant {tenant_id!r} has no key in its key store to rotate")
    if current.key_version > registered_key_version:
        return current, True
    return call(actor.rotate_key.remote()), False


@task(name="validate-shards", task_run_name="validate shards of {tenant_id}", **_OPTIONS)
def validate_shards(
    tenant_id: str, jobs: Sequence[ShardJob], shards: Sequence[ShardWritten]
) -> dict[str, SampleCheck]:
    """Row counts match the jobs; the tenant decrypts a sample of each split exactly; no
    sampled ciphertext equals its plain image. Returns the sample check of each split."""
    for job, shard in zip(jobs, shards, strict=True):
        expected = len(job.indices) * (1 + job.augment_variants)
        if shard.rows != expected:
            raise ValidationError(
                f"shard {shard.name} holds {shard.rows} rows, expected {expected}"
            )
    actor = existing_tenant_actor(tenant_id)
    checks = {}
    for split in ("train", "validation"):
        first = next((i for i, job in enumerate(jobs) if job.split == split), None)
        if first is None:
            continue
        job, shard = jobs[first], shards[first]
        check: SampleCheck = call(
            actor.validate_sample.remote(shard.shard.uri, job.source, job.indices, job.index_offset)
        )
        if not check.decrypts_exactly:
            raise ValidationError(
                f"tenant {tenant_id!r} cannot decrypt shard {shard.name} exactly; "
                "nothing was published"
            )
        if not check.differs_from_plain:
            raise ValidationError(
                f"shard {shard.name} holds images equal to their plain originals; "
                "nothing was published"
            )
        checks[split] = check
    return checks


@task(name="scan-inbox", task_run_name="scan inbox of {tenant_id}", **_OPTIONS)
def scan_inbox(tenant_id: str, class_names: Sequence[str]) -> InboxScan:
    """The actor gathers newly dropped images into batches (and rejects unfit files)."""
    return call(existing_tenant_actor(tenant_id).scan_inbox.remote(list(class_names)))


@task(name="archive-inbox-batch", task_run_name="archive inbox batch of {tenant_id}", **_OPTIONS)
def archive_inbox_batch(tenant_id: str, source: str) -> str:
    """The actor moves a published batch's files to `processed/`."""
    return call(existing_tenant_actor(tenant_id).archive_inbox_batch.remote(source))
