"""Publishing dataset versions, one at a time per dataset: staging, carry-over, manifest, record.

Actors write new shards into a staging folder (`<dataset>/_staging/<run>/`, invisible to
readers); publishing then takes the dataset's lock, copies them into a fresh version folder next
to the shards it keeps from the latest recorded version, writes the manifest last and records
the version in the registry. With a PostgreSQL registry the locks are advisory locks in its
database, so onboardings on different machines cannot both publish version N; with SQLite (one
machine) they are files under `<home>/locks`. A staging folder is named after the time it was
made; one left behind by a run that crashed is removed by the next publishing of that dataset
once it is older than `STALE_STAGING` (no run stages for that long).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.fs as pafs

from patchveil.config import PlatformConfig
from patchveil.datasets import (
    DatasetVersion,
    ShardInfo,
    carry_over,
    load_manifest,
    next_version,
    publish_version,
    storage,
    version_uri,
)
from patchveil.datasets.manifest import check_dataset_name
from patchveil.errors import PatchveilError
from patchveil.registry import NewSource, Registry
from patchveil.registry.locks import database_locks, has_database_locks

STAGING_FOLDER = "_staging"
STALE_STAGING = timedelta(hours=24)
_STAGING_NAME = re.compile(r"^(?P<made>\d{8}T\d{6}Z)-[0-9a-f]{32}$")
_STAGING_TIME = "%Y%m%dT%H%M%SZ"


def default_dataset_name(cipher: str, block_size: int, image_size: int) -> str:
    """One dataset per cipher configuration: `<cipher>-b<block_size>-s<image_size>`."""
    return check_dataset_name(f"{cipher}-b{block_size}-s{image_size}")


@contextlib.contextmanager
def platform_locks(
    config: PlatformConfig, names: Iterable[str], registry: Registry | None = None
) -> Iterator[None]:
    """Hold exclusive named locks, taken in sorted order, wherever the registry is shared.

    A PostgreSQL registry holds them as advisory locks (cluster-wide; on `registry`'s own
    connections when given, else on one opened for the block); a SQLite registry means one
    machine, and they are file locks `<home>/locks/<name>.lock`.
    """
    wanted = sorted(set(names))
    if registry is not None and registry.has_locks:
        with registry.locks(wanted):
            yield
    elif has_database_locks(config.registry_url):
        with database_locks(config.registry_url, wanted):
            yield
    else:
        with _file_locks(config, wanted):
            yield


@contextlib.contextmanager
def _file_locks(config: PlatformConfig, names: Iterable[str]) -> Iterator[None]:
    folder = Path(config.home) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            handle = stack.enter_context(open(folder / f"{name}.lock", "a+b"))
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            stack.callback(fcntl.flock, handle.fileno(), fcntl.LOCK_UN)
        yield


def tenant_locks(
    config: PlatformConfig, tenant_ids: Iterable[str]
) -> contextlib.AbstractContextManager[None]:
    """One tenant's operations (onboarding, inbox, rotation) never interleave."""
    return platform_locks(config, (f"tenant-{tenant_id}" for tenant_id in tenant_ids))


def new_staging_uri(config: PlatformConfig, dataset_name: str, now: datetime | None = None) -> str:
    """A fresh staging folder for one run's new shards of a dataset: `<UTC time>-<random>`."""
    made = (now or datetime.now(UTC)).strftime(_STAGING_TIME)
    return storage.join_uri(_staging_root(config, dataset_name), f"{made}-{uuid.uuid4().hex}")


def _staging_root(config: PlatformConfig, dataset_name: str) -> str:
    return storage.join_uri(config.dataset_root, check_dataset_name(dataset_name), STAGING_FOLDER)


def sweep_stale_staging(
    config: PlatformConfig,
    dataset_name: str,
    older_than: timedelta = STALE_STAGING,
    now: datetime | None = None,
) -> list[str]:
    """Remove a dataset's staging folders made more than `older_than` ago (left by crashed
    runs); folders named otherwise are not touched. Returns the names removed."""
    root = _staging_root(config, dataset_name)
    cutoff = (now or datetime.now(UTC)) - older_than
    removed = []
    for name in storage.list_folders(root):
        match = _STAGING_NAME.match(name)
        if match is None:
            continue
        made = datetime.strptime(match.group("made"), _STAGING_TIME).replace(tzinfo=UTC)
        if made < cutoff:
            remove_folder(storage.join_uri(root, name))
            removed.append(name)
    return removed


def remove_folder(uri: str) -> None:
    """Delete a folder and everything in it (missing is fine)."""
    filesystem, path = storage.resolve(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_dir(path)


def latest_recorded_version(
    config: PlatformConfig, registry: Registry, dataset_name: str
) -> DatasetVersion | None:
    """The newest version of a dataset that the registry recorded (its manifest), if any.

    A version published but never recorded (a crash in between) is skipped, so its shards are
    not carried into the next version twice.
    """
    recorded = registry.list_dataset_versions(dataset_name)
    return load_manifest(recorded[-1].uri) if recorded else None


def publish_and_record(
    config: PlatformConfig,
    registry: Registry,
    dataset_name: str,
    staged: Sequence[ShardInfo],
    *,
    replaced: Iterable[str] = (),
    sources: Sequence[NewSource] = (),
) -> DatasetVersion:
    """Publish the next version of a dataset: the latest recorded version's shards (minus the
    names in `replaced`) plus the `staged` ones; record it, with `sources`, in the registry."""
    with platform_locks(config, [f"dataset-{dataset_name}"], registry):
        sweep_stale_staging(config, dataset_name)
        base = latest_recorded_version(config, registry, dataset_name)
        version = next_version(config.dataset_root, dataset_name)
        folder = version_uri(config.dataset_root, dataset_name, version)
        dropped = set(replaced)
        # A removed tenant's shards are never carried on, even into a dataset it left empty.
        removed = set(removed_tenants_in(registry, base)) if base else set()
        kept = [
            shard
            for shard in (base.shards if base else [])
            if shard.name not in dropped and shard.tenant_id not in removed
        ]
        published = publish_version(
            config.dataset_root,
            dataset_name,
            version,
            carry_over(staged, folder),
            parent_version=base.version if base else None,
            carried_shards=kept,
        )
        registry.record_manifest(published, sources=sources)
        return published


def removed_tenants_in(registry: Registry, version: DatasetVersion) -> list[str]:
    """Tenants with shards in `version` that were offboarded since: no longer registered, their
    shards retired in the registry (a dataset published outside the registry has none)."""
    present = set(version.tenant_ids)
    registered = {tenant.tenant_id for tenant in registry.list_tenants()}
    retired = {
        shard.tenant_id
        for shard in registry.list_shards(dataset_name=version.name, status="retired")
        if shard.tenant_id in present
    }
    return sorted(retired - registered)


def check_trainable(registry: Registry, version: DatasetVersion) -> DatasetVersion:
    """Refuse a dataset version that holds a removed tenant's shards: training never reads them.

    Offboarding publishes a version without the tenant, except when it was the dataset's last
    tenant (a version needs a shard); then every version of that dataset is refused until a
    tenant is onboarded into it.
    """
    removed = removed_tenants_in(registry, version)
    if not removed:
        return version
    clean = [
        recorded.version
        for recorded in registry.list_dataset_versions(version.name)
        if not set(load_manifest(recorded.uri).tenant_ids) & set(removed)
        and recorded.version > version.version
    ]
    advice = (
        f"train on version {clean[-1]} instead"
        if clean
        else "no later version is without them: onboard a tenant into the dataset first"
    )
    raise PatchveilError(
        f"dataset {version.name!r} v{version.version} holds shards of removed tenant(s) "
        f"{', '.join(removed)}; training never reads a removed tenant's images: {advice}"
    )


def version_summary(published: DatasetVersion) -> dict[str, object]:
    """A dataset version as plain JSON: name, version, folder, rows, tenants and key versions."""
    return {
        "dataset": published.name,
        "version": published.version,
        "uri": published.uri,
        "rows": published.rows,
        "shards": len(published.shards),
        "tenants": published.key_versions,
    }
