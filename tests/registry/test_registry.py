"""Tests for the registry: tenants, API tokens, datasets, shards, models, and rollback.

Every test that takes the `registry` fixture runs twice: on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.registry import Registry, RegistryError, Tenant, UnknownTenantError
from patchveil.registry.locks import lock_key


@dataclass(frozen=True)
class FakeShard:
    uri: str
    tenant_id: str
    key_version: int = 1
    rows: int = 10
    sha256: str = "0" * 64
    bytes: int = 1234


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    registry = Registry(url)
    registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)
    registry.upsert_tenant("bolt", cipher="conventional", block_size=4, image_size=32)
    yield registry
    # Closed before the test database is dropped (PostgreSQL refuses to drop one in use).
    registry.close()


def stored_bytes(registry: Registry, tmp_path: Path) -> bytes:
    """What the database keeps: SQLite's whole file (free pages too), or every PostgreSQL row."""
    if registry.url.startswith("sqlite"):
        return (tmp_path / "state" / "registry.db").read_bytes()
    with registry.session() as session:
        tables = session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).all()
        rows = [
            session.execute(text(f'SELECT t::text FROM "{table}" AS t')).scalars().all()
            for table in tables
        ]
    assert "tenants" in tables
    return repr(rows).encode()


def test_tenants_are_registered_listed_and_idempotent(registry: Registry) -> None:
    again = registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)
    assert again.key_version == 1 and again.status == "active"
    assert [tenant.tenant_id for tenant in registry.list_tenants()] == ["acme", "bolt"]
    rotated = registry.upsert_tenant(
        "acme", cipher="conventional", block_size=4, image_size=32, key_version=2
    )
    assert rotated.key_version == 2
    assert registry.get_tenant("acme").key_version == 2
    assert registry.get_tenant("acme").created_at.tzinfo is not None


def test_a_second_onboarding_with_another_cipher_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="registered with cipher conventional, block size 4"):
        registry.upsert_tenant("acme", cipher="restricted", block_size=4, image_size=32)
    assert registry.get_tenant("acme").cipher == "conventional"
    changed = registry.upsert_tenant(
        "acme", cipher="restricted", block_size=4, image_size=32, allow_cipher_change=True
    )
    assert changed.cipher == "restricted"


def test_unknown_tenant_error_names_it_and_the_known_ones(registry: Registry) -> None:
    with pytest.raises(UnknownTenantError, match=r"'zed' is not registered.*acme, bolt"):
        registry.get_tenant("zed")
    assert issubclass(UnknownTenantError, PatchveilError)


def test_api_token_is_shown_once_and_stored_only_hashed(registry: Registry, tmp_path: Path) -> None:
    assert not registry.get_tenant("acme").has_api_token
    token = registry.issue_api_token("acme")
    assert len(token) >= 43
    assert registry.get_tenant("acme").has_api_token
    assert token.encode() not in stored_bytes(registry, tmp_path)
    with registry.session() as session:
        stored = session.scalars(select(Tenant.api_token_hash).where(Tenant.tenant_id == "acme"))
        stored_hash = stored.one()
    assert stored_hash is not None and stored_hash.startswith("sha256$")
    assert token not in stored_hash
    assert token not in repr(registry.get_tenant("acme"))

    assert registry.verify_api_token("acme", token)
    assert not registry.verify_api_token("acme", token + "x")
    assert not registry.verify_api_token("bolt", token)  # another tenant's token
    assert not registry.verify_api_token("zed", token)  # unknown tenant: just False


def test_a_new_token_revokes_the_old_one(registry: Registry) -> None:
    first = registry.issue_api_token("acme")
    second = registry.issue_api_token("acme")
    assert first != second
    assert registry.verify_api_token("acme", second)
    assert not registry.verify_api_token("acme", first)


def test_suspended_tenants_tokens_do_not_verify(registry: Registry) -> None:
    token = registry.issue_api_token("acme")
    registry.upsert_tenant(
        "acme", cipher="conventional", block_size=4, image_size=32, status="suspended"
    )
    assert not registry.verify_api_token("acme", token)


def test_dataset_versions_and_shards_are_recorded_idempotently(registry: Registry) -> None:
    shards = [FakeShard("/d/v1/a.parquet", "acme"), FakeShard("/d/v1/b.parquet", "bolt")]
    record = registry.record_dataset_version("cifar", 1, "/d/v1", 20, shards=shards)
    assert (record.name, record.version, record.rows) == ("cifar", 1, 20)
    registry.record_dataset_version("cifar", 1, "/d/v1", 20, shards=shards)
    assert len(registry.list_shards()) == 2
    assert [v.version for v in registry.list_dataset_versions("cifar")] == [1]
    assert [s.uri for s in registry.list_shards(tenant_id="acme")] == ["/d/v1/a.parquet"]
    with pytest.raises(RegistryError, match="already recorded at /d/v1 with 20 rows"):
        registry.record_dataset_version("cifar", 1, "/elsewhere", 20)


def test_retiring_shards_after_a_rotation(registry: Registry) -> None:
    registry.record_dataset_version("cifar", 1, "/d/v1", 10, shards=[FakeShard("/d/v1/a", "acme")])
    registry.record_dataset_version(
        "cifar",
        2,
        "/d/v2",
        10,
        shards=[FakeShard("/d/v2/a", "acme", key_version=2)],
        parent_version=1,
    )
    assert registry.retire_shards(["/d/v1/a"]) == 1
    assert registry.retire_shards(["/d/v1/a"]) == 0
    active = registry.list_shards(tenant_id="acme")
    assert [(s.uri, s.key_version) for s in active] == [("/d/v2/a", 2)]
    retired = registry.list_shards(status="retired")
    assert retired[0].retired_at is not None and retired[0].dataset_version == 1


def test_a_failing_retire_changes_nothing(registry: Registry) -> None:
    registry.record_dataset_version("cifar", 1, "/d/v1", 10, shards=[FakeShard("/d/v1/a", "acme")])
    with pytest.raises(RegistryError, match="not recorded: /d/v1/missing"):
        registry.retire_shards(["/d/v1/a", "/d/v1/missing"])
    assert [s.status for s in registry.list_shards(status=None)] == ["active"]


def test_a_failing_dataset_record_leaves_no_version_and_no_shard(registry: Registry) -> None:
    shards = [FakeShard("/d/v1/a", "acme"), FakeShard("/d/v1/z", "zed")]  # zed is unknown
    with pytest.raises(UnknownTenantError, match="zed"):
        registry.record_dataset_version("cifar", 1, "/d/v1", 20, shards=shards)
    assert registry.list_dataset_versions() == []
    assert registry.list_shards(status=None) == []


def test_a_failing_session_rolls_back(registry: Registry) -> None:
    with pytest.raises(RuntimeError), registry.session() as session:
        session.add(Tenant(tenant_id="ghost", cipher="c", block_size=4, image_size=32))
        session.flush()
        raise RuntimeError("crash mid-transaction")
    with pytest.raises(UnknownTenantError):
        registry.get_tenant("ghost")


def test_remove_tenant_retires_its_shards_and_forgets_its_token(registry: Registry) -> None:
    token = registry.issue_api_token("acme")
    registry.record_dataset_version(
        "cifar", 1, "/d/v1", 20, shards=[FakeShard("/d/v1/a", "acme"), FakeShard("/d/v1/b", "bolt")]
    )
    assert registry.remove_tenant("acme") == 1
    assert [t.tenant_id for t in registry.list_tenants()] == ["bolt"]
    assert not registry.verify_api_token("acme", token)
    assert [s.tenant_id for s in registry.list_shards()] == ["bolt"]
    with pytest.raises(UnknownTenantError):
        registry.remove_tenant("acme")


def test_model_versions_point_at_dataset_versions(registry: Registry) -> None:
    registry.record_dataset_version("cifar", 1, "/d/v1", 10)
    card = {"arch": "vit_tiny", "accuracy": 0.44, "tenants": ["acme", "bolt"]}
    first = registry.record_model_version(
        "shared-vit",
        checkpoint_uri="/c/1",
        model_card=card,
        dataset_name="cifar",
        dataset_version=1,
    )
    second = registry.record_model_version("shared-vit", checkpoint_uri="/c/2", model_card={})
    assert (first.version, second.version) == (1, 2)
    assert first.model_card == card and first.dataset_name == "cifar"
    assert [m.version for m in registry.list_model_versions("shared-vit")] == [1, 2]
    with pytest.raises(RegistryError, match="already recorded; next free version is 3"):
        registry.record_model_version("shared-vit", checkpoint_uri="/c", model_card={}, version=1)
    with pytest.raises(RegistryError, match="not recorded"):
        registry.record_model_version(
            "other", checkpoint_uri="/c", model_card={}, dataset_name="cifar", dataset_version=9
        )
    with pytest.raises(RegistryError, match="JSON"):
        registry.record_model_version("other", checkpoint_uri="/c", model_card={"x": object()})
    assert registry.list_model_versions("other") == []


def test_registry_from_config_creates_the_sqlite_file_under_home(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path / "home")
    registry = Registry.from_config(config)
    registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)
    assert (tmp_path / "home" / "registry.db").is_file()
    with sqlite3.connect(tmp_path / "home" / "registry.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"tenants", "dataset_versions", "shards", "model_versions"} <= tables
    registry.close()


def test_a_registry_in_a_with_block_is_closed_even_when_the_block_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Registry] = []
    monkeypatch.setattr(Registry, "close", lambda self: closed.append(self))
    config = PlatformConfig(home=tmp_path / "home")
    with Registry.from_config(config) as registry:
        registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)
    assert closed == [registry]
    with pytest.raises(UnknownTenantError), Registry.from_config(config) as failing:
        failing.get_tenant("nobody")
    assert closed == [registry, failing]


def test_in_memory_registry_and_bad_urls() -> None:
    registry = Registry("sqlite://")
    registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)
    assert registry.get_tenant("acme").tenant_id == "acme"
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("not a url")
    with pytest.raises(RegistryError, match="divide"):
        registry.upsert_tenant("x", cipher="conventional", block_size=5, image_size=32)


def test_image_sources_are_recorded_with_their_version_and_hand_out_indices(
    registry: Registry,
) -> None:
    from patchveil.registry import NewSource

    assert registry.next_image_index("acme") == 0
    first = NewSource("acme", "f" * 64, "onboarding", "/data/acme", 100, 0, ("cat", "dog"))
    shard = FakeShard("/data/cifar/v1/acme-0.parquet", "acme")
    registry.record_dataset_version(
        "cifar", 1, "/data/cifar/v1", 10, shards=[shard], sources=[first]
    )
    found = registry.find_source("acme", "f" * 64)
    assert found is not None and (found.dataset_name, found.dataset_version) == ("cifar", 1)
    assert found.class_names == ("cat", "dog")
    assert registry.find_source("bolt", "f" * 64) is None
    assert registry.next_image_index("acme") == 100
    second = NewSource("acme", "e" * 64, "inbox", "/inbox/batch", 5, 100)
    registry.record_dataset_version("cifar", 2, "/data/cifar/v2", 15, sources=[second])
    assert registry.next_image_index("acme") == 105
    assert [s.kind for s in registry.list_sources("acme")] == ["onboarding", "inbox"]
    # The same images cannot enter a second version.
    with pytest.raises(RegistryError, match="onboarded already"):
        registry.record_dataset_version("cifar", 3, "/data/cifar/v3", 15, sources=[first])
    assert [v.version for v in registry.list_dataset_versions("cifar")] == [1, 2]
    registry.remove_tenant("acme")
    assert registry.list_sources("acme") == [] and registry.next_image_index("acme") == 0


def test_named_locks_hold_across_registries_only_on_postgresql(registry: Registry) -> None:
    if not registry.has_locks:
        with pytest.raises(RegistryError, match="only a PostgreSQL registry"):
            registry.locks(["dataset-cifar"])
        return
    entered = threading.Event()
    with Registry(registry.url) as elsewhere:  # another machine's registry, same database

        def wait_for_lock() -> None:
            with elsewhere.locks(["dataset-cifar"]):
                entered.set()

        with registry.locks(["dataset-cifar", "tenant-acme"]):
            waiter = threading.Thread(target=wait_for_lock)
            waiter.start()
            assert not entered.wait(0.3)
        waiter.join(timeout=10)
    assert entered.is_set()
    assert lock_key("dataset-cifar") == lock_key("dataset-cifar") != lock_key("dataset-other")


@pytest.mark.postgres
def test_concurrent_trainers_get_distinct_model_versions_on_postgresql(postgres_url: str) -> None:
    with Registry(postgres_url) as registry:
        registry.upsert_tenant("acme", cipher="conventional", block_size=4, image_size=32)

    def record(index: int) -> int:
        with Registry(postgres_url) as trainer:  # one per trainer, as on separate machines
            return trainer.record_model_version(
                "shared-vit", checkpoint_uri=f"/c/{index}", model_card={"run": index}
            ).version

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = sorted(pool.map(record, range(6)))
    assert versions == [1, 2, 3, 4, 5, 6]
