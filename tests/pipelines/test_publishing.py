"""Publishing: staging folders and their sweep; one publisher at a time, across machines."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchveil.config import PlatformConfig
from patchveil.datasets import ShardInfo, load_manifest
from patchveil.datasets.shards import write_shard
from patchveil.pipelines import publishing
from patchveil.pipelines.publishing import (
    STAGING_FOLDER,
    new_staging_uri,
    publish_and_record,
    sweep_stale_staging,
    tenant_locks,
)
from patchveil.registry import Registry
from tests.datasets.factories import make_table

DATASET = "race"


@pytest.fixture
def registry_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's PostgreSQL server (`tests/services.py`)."""
    return str(request.getfixturevalue("postgres_url"))


def test_stale_staging_folders_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    old = Path(new_staging_uri(config, "demo", now=now - timedelta(days=2)))
    fresh = Path(new_staging_uri(config, "demo", now=now - timedelta(hours=1)))
    foreign = old.parent / "kept-by-hand"
    for folder in (old, fresh, foreign):
        folder.mkdir(parents=True)
        (folder / "shard.parquet").write_bytes(b"x")
    assert old.parent.name == STAGING_FOLDER
    assert old.name.startswith("20261121T120000Z-")

    assert sweep_stale_staging(config, "demo", now=now) == [old.name]
    assert not old.exists()
    assert fresh.exists() and foreign.exists()
    assert sweep_stale_staging(config, "demo", now=now) == []
    assert sweep_stale_staging(config, "never-published", now=now) == []


def _stage(config: PlatformConfig, tenant_id: str, seed: int) -> list[ShardInfo]:
    table = make_table(count=3, tenant_id=tenant_id, key_version=1, seed=seed)
    return [write_shard(table, new_staging_uri(config, DATASET), f"{tenant_id}-{seed}")]


def _publish_concurrently(machines: list[PlatformConfig], staged: list[list[ShardInfo]]) -> None:
    """Two publishers at once, each with its own registry connection, as on two machines."""

    def publish(config: PlatformConfig, shards: list[ShardInfo]) -> None:
        with Registry.from_config(config) as registry:
            publish_and_record(config, registry, DATASET, shards)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for outcome in [pool.submit(publish, *pair) for pair in zip(machines, staged, strict=True)]:
            outcome.result()


@pytest.mark.postgres
@pytest.mark.parametrize("locked", [True, False], ids=["database-lock", "no-lock-control"])
def test_two_publishers_on_two_machines_never_both_publish_version_n(
    tmp_path: Path, registry_url: str, monkeypatch: pytest.MonkeyPatch, locked: bool
) -> None:
    # Shared storage and a shared PostgreSQL registry; each "machine" has its own home, so its
    # file locks could not keep the other out: only the database lock can.
    machines = [
        PlatformConfig(
            home=tmp_path / f"machine-{index}",
            dataset_root=str(tmp_path / "shared-storage"),
            registry_url=registry_url,
        )
        for index in (1, 2)
    ]
    with Registry(registry_url) as registry:
        for tenant_id in ("acme", "bolt"):
            registry.upsert_tenant(tenant_id, cipher="conventional", block_size=4, image_size=8)
    staged = [_stage(machines[0], "acme", 1), _stage(machines[1], "bolt", 2)]
    # Both publishers meet right after reading the latest version, when they can: without a
    # lock they then both build on nothing; with it the second waits, the first goes on alone.
    meeting = threading.Barrier(2)
    read_latest = publishing.latest_recorded_version

    def latest_then_meet(*args: Any) -> Any:
        latest = read_latest(*args)
        with contextlib.suppress(threading.BrokenBarrierError):
            meeting.wait(timeout=1.0)
        return latest

    monkeypatch.setattr(publishing, "latest_recorded_version", latest_then_meet)
    if not locked:
        monkeypatch.setattr(publishing, "platform_locks", lambda *_args: contextlib.nullcontext())
    raised: list[BaseException] = []
    try:
        _publish_concurrently(machines, staged)
    except Exception as error:  # the control may also crash on the shared version folder
        raised.append(error)

    with Registry(registry_url) as registry:
        recorded = registry.list_dataset_versions(DATASET)
    versions = [record.version for record in recorded]
    latest_tenants = load_manifest(recorded[-1].uri).tenant_ids if recorded else []
    consistent = not raised and versions == [1, 2] and latest_tenants == ["acme", "bolt"]
    if locked:
        assert consistent, (raised, versions, latest_tenants)
        assert recorded[1].parent_version == 1
        assert not any((machine.home / "locks").exists() for machine in machines)
    else:
        # The control shows the race is real: without the lock one publication is lost.
        assert not consistent, (versions, latest_tenants)


@pytest.mark.postgres
def test_tenant_locks_of_a_postgresql_platform_are_database_locks(
    tmp_path: Path, registry_url: str
) -> None:
    config = PlatformConfig(home=tmp_path / "home", registry_url=registry_url)
    entered = threading.Event()

    def second_holder() -> None:
        with tenant_locks(config, ["acme"]):
            entered.set()

    with tenant_locks(config, ["acme", "bolt"]):
        other = threading.Thread(target=second_holder)
        other.start()
        assert not entered.wait(0.5)  # held in the database: the other session waits
    other.join(timeout=10)
    assert entered.is_set()
    assert not (config.home / "locks").exists()
