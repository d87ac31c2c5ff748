"""The platform registry: tenants, dataset versions, shards and models in one SQL database.

SQLite under `PATCHVEIL_HOME` by default; any SQLAlchemy URL (PostgreSQL) in production. Every
method runs in one transaction, so an operation that fails leaves the registry as it was. Methods
return frozen snapshots, never live ORM objects, so results can cross process boundaries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from patchveil.config import PlatformConfig, check_tenant_id
from patchveil.errors import PatchveilError
from patchveil.registry.locks import engine_locks, has_database_locks, take_locks
from patchveil.registry.models import (
    SHARD_STATUSES,
    TENANT_STATUSES,
    Base,
    DatasetVersionRow,
    ModelVersion,
    Shard,
    Tenant,
    TenantSource,
    utc_now,
)
from patchveil.registry.tokens import hash_token, new_token, token_matches

# The lock every registry takes while it creates missing tables.
SCHEMA_LOCK = "registry-schema"


class RegistryError(PatchveilError):
    """A registry operation was refused; nothing was changed."""


class UnknownTenantError(RegistryError):
    """The tenant is not registered."""


class ShardLike(Protocol):
    """What the registry needs to know of a written shard (`datasets.ShardInfo` fits)."""

    @property
    def uri(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def key_version(self) -> int: ...


class PublishedVersion(Protocol):
    """What the registry needs of a published dataset version (`datasets.DatasetVersion` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def uri(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def parent_version(self) -> int | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def shards(self) -> Iterable[ShardLike]: ...


def _utc(moment: datetime) -> datetime:
    # SQLite drops the time zone; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TenantRecord:
    """A registered tenant as the platform sees it (no token, no key)."""

    tenant_id: str
    cipher: str
    block_size: int
    image_size: int
    key_version: int
    status: str
    has_api_token: bool
    created_at: datetime

    @classmethod
    def of(cls, row: Tenant) -> TenantRecord:
        return cls(
            tenant_id=row.tenant_id,
            cipher=row.cipher,
            block_size=row.block_size,
            image_size=row.image_size,
            key_version=row.key_version,
            status=row.status,
            has_api_token=row.api_token_hash is not None,
            created_at=_utc(row.created_at),
        )


@dataclass(frozen=True)
class DatasetVersionRecord:
    """A recorded dataset version."""

    name: str
    version: int
    uri: str
    rows: int
    parent_version: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: DatasetVersionRow) -> DatasetVersionRecord:
        return cls(
            name=row.name,
            version=row.version,
            uri=row.uri,
            rows=row.rows,
            parent_version=row.parent_version,
            created_at=_utc(row.created_at),
        )


@dataclass(frozen=True)
class ShardRecord:
    """A recorded shard and the dataset version it belongs to."""

    dataset_name: str
    dataset_version: int
    tenant_id: str
    key_version: int
    uri: str
    rows: int
    sha256: str
    bytes: int
    status: str
    created_at: datetime
    retired_at: datetime | None

    @classmethod
    def of(cls, row: Shard) -> ShardRecord:
        return cls(
            dataset_name=row.dataset_version.name,
            dataset_version=row.dataset_version.version,
            tenant_id=row.tenant_id,
            key_version=row.key_version,
            uri=row.uri,
            rows=row.rows,
            sha256=row.sha256,
            bytes=row.size_bytes,
            status=row.status,
            created_at=_utc(row.created_at),
            retired_at=None if row.retired_at is None else _utc(row.retired_at),
        )


@dataclass(frozen=True)
class NewSource:
    """A batch of a tenant's images to record with the dataset version it entered."""

    tenant_id: str
    fingerprint: str
    kind: str  # "onboarding" or "inbox"
    source: str
    images: int
    first_index: int
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceRecord:
    """A recorded batch of a tenant's images: fingerprint, image indices, where it went."""

    tenant_id: str
    fingerprint: str
    kind: str
    source: str
    images: int
    first_index: int
    class_names: tuple[str, ...]
    dataset_name: str
    dataset_version: int
    created_at: datetime

    @classmethod
    def of(cls, row: TenantSource) -> SourceRecord:
        return cls(
            tenant_id=row.tenant_id,
            fingerprint=row.fingerprint,
            kind=row.kind,
            source=row.source,
            images=row.images,
            first_index=row.first_index,
            class_names=tuple(row.class_names),
            dataset_name=row.dataset_version.name,
            dataset_version=row.dataset_version.version,
            created_at=_utc(row.created_at),
        )


@dataclass(frozen=True)
class ModelVersionRecord:
    """A recorded model version."""

    name: str
    version: int
    dataset_name: str | None
    dataset_version: int | None
    model_card: dict[str, Any]
    checkpoint_uri: str
    created_at: datetime

    @classmethod
    def of(cls, row: ModelVersion) -> ModelVersionRecord:
        dataset = row.dataset_version
        return cls(
            name=row.name,
            version=row.version,
            dataset_name=None if dataset is None else dataset.name,
            dataset_version=None if dataset is None else dataset.version,
            model_card=dict(row.model_card),
            checkpoint_uri=row.checkpoint_uri,
            created_at=_utc(row.created_at),
        )


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise RegistryError(
            f"registry URL {url!r} is not a database URL; use e.g. sqlite:///path/registry.db "
            "or postgresql+psycopg://user@host/db"
        ) from error
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:"):
        # One shared connection, or every session would see its own empty in-memory database.
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Ray actors and Prefect tasks in other processes share the file: wait for locks.
        engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _enable_foreign_keys(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class Registry:
    """Tenants, dataset versions, shards and model versions; one transaction per call."""

    def __init__(self, url: str) -> None:
        self._engine = _create_engine(url)
        self._locking = has_database_locks(url)
        with self._engine.begin() as connection:
            if self._locking:
                # Registries on several machines may start at once against a fresh database.
                take_locks(connection, [SCHEMA_LOCK])
            Base.metadata.create_all(connection)

    @classmethod
    def from_config(cls, config: PlatformConfig | None = None) -> Registry:
        return cls((config or PlatformConfig.from_env()).registry_url)

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Registry(url={self.url!r})"

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close on leaving a `with` block, also when it raised (the error goes on)."""
        self.close()

    @property
    def has_locks(self) -> bool:
        """True when `locks` can hold cluster-wide locks (a PostgreSQL registry)."""
        return self._locking

    def locks(self, names: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """Hold named locks for a `with` block, for every process on every machine that uses
        this database: a PostgreSQL advisory lock per name, released when the block ends or the
        holder dies. A SQLite registry (one machine) has none: use file locks there."""
        if not self._locking:
            raise RegistryError(
                f"registry {self.url} cannot hold cluster-wide locks; only a PostgreSQL registry "
                "(postgresql+psycopg://…) can: on one machine use file locks instead"
            )
        return engine_locks(self._engine, names)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- tenants -------------------------------------------------------------------------------

    def _tenant(self, session: Session, tenant_id: str) -> Tenant:
        row = session.get(Tenant, tenant_id)
        if row is None:
            known = session.scalars(select(Tenant.tenant_id).order_by(Tenant.tenant_id)).all()
            listed = ", ".join(known[:10]) + (" …" if len(known) > 10 else "")
            raise UnknownTenantError(
                f"tenant {tenant_id!r} is not registered; registered tenants: "
                f"{listed or 'none'} (onboard it first)"
            )
        return row

    def upsert_tenant(
        self,
        tenant_id: str,
        *,
        cipher: str,
        block_size: int,
        image_size: int,
        key_version: int | None = None,
        status: str | None = None,
        allow_cipher_change: bool = False,
    ) -> TenantRecord:
        """Register a tenant, or update its key version and status.

        Registering again with the same cipher, block size and image size changes nothing else;
        a different cipher configuration is refused unless `allow_cipher_change` (the tenant's
        existing shards would no longer fit the shared model).
        """
        check_tenant_id(tenant_id)
        if block_size <= 0 or image_size <= 0 or image_size % block_size:
            raise RegistryError(
                f"block size {block_size} must be positive and divide image size {image_size}"
            )
        if status is not None and status not in TENANT_STATUSES:
            raise RegistryError(f"tenant status {status!r} is not one of {TENANT_STATUSES}")
        if key_version is not None and key_version < 1:
            raise RegistryError(f"key version must be 1 or more, got {key_version}")
        with self.session() as session:
            row = session.get(Tenant, tenant_id)
            if row is None:
                row = Tenant(
                    tenant_id=tenant_id,
                    cipher=cipher,
                    block_size=block_size,
                    image_size=image_size,
                    key_version=key_version or 1,
                    status=status or "active",
                    created_at=utc_now(),
                )
                session.add(row)
            else:
                registered = (row.cipher, row.block_size, row.image_size)
                if registered != (cipher, block_size, image_size) and not allow_cipher_change:
                    raise RegistryError(
                        f"tenant {tenant_id!r} is registered with cipher {row.cipher}, block "
                        f"size {row.block_size}, image size {row.image_size}; onboard it with "
                        "those, or remove the tenant first to change its cipher"
                    )
                row.cipher, row.block_size, row.image_size = cipher, block_size, image_size
                if key_version is not None:
                    row.key_version = key_version
                if status is not None:
                    row.status = status
            session.flush()
            return TenantRecord.of(row)

    def get_tenant(self, tenant_id: str) -> TenantRecord:
        with self.session() as session:
            return TenantRecord.of(self._tenant(session, tenant_id))

    def list_tenants(self) -> list[TenantRecord]:
        with self.session() as session:
            rows = session.scalars(select(Tenant).order_by(Tenant.tenant_id))
            return [TenantRecord.of(row) for row in rows]

    def issue_api_token(self, tenant_id: str) -> str:
        """A new API token for the tenant, returned this once; only its hash is stored.

        Issuing a new token revokes the previous one.
        """
        token = new_token()
        with self.session() as session:
            self._tenant(session, tenant_id).api_token_hash = hash_token(token)
        return token

    def verify_api_token(self, tenant_id: str, token: str) -> bool:
        """True when `token` is the tenant's current token (False for unknown tenants too)."""
        with self.session() as session:
            row = session.get(Tenant, tenant_id)
            stored = None if row is None or row.status != "active" else row.api_token_hash
        return token_matches(token, stored)

    def remove_tenant(self, tenant_id: str) -> int:
        """Delete the tenant (token hash, source records) and retire its active shards.

        Returns how many shards were retired.
        """
        with self.session() as session:
            row = self._tenant(session, tenant_id)
            for source in session.scalars(
                select(TenantSource).where(TenantSource.tenant_id == tenant_id)
            ):
                session.delete(source)
            shards = session.scalars(
                select(Shard).where(Shard.tenant_id == tenant_id, Shard.status == "active")
            ).all()
            now = utc_now()
            for shard in shards:
                shard.status, shard.retired_at = "retired", now
            session.delete(row)
            return len(shards)

    # -- datasets and shards -------------------------------------------------------------------

    def _dataset_version(self, session: Session, name: str, version: int) -> DatasetVersionRow:
        row = session.scalars(
            select(DatasetVersionRow).where(
                DatasetVersionRow.name == name, DatasetVersionRow.version == version
            )
        ).one_or_none()
        if row is None:
            raise RegistryError(
                f"dataset {name!r} version {version} is not recorded; record it first"
            )
        return row

    def _add_shards(
        self, session: Session, dataset: DatasetVersionRow, shards: Iterable[ShardLike]
    ) -> list[Shard]:
        added = []
        for shard in shards:
            self._tenant(session, shard.tenant_id)
            existing = session.scalars(select(Shard).where(Shard.uri == shard.uri)).one_or_none()
            if existing is not None:
                if existing.dataset_version_id != dataset.id or existing.sha256 != shard.sha256:
                    raise RegistryError(
                        f"shard {shard.uri} is already recorded with different content or in "
                        "another dataset version; shards are immutable, write a new one"
                    )
                added.append(existing)
                continue
            row = Shard(
                dataset_version=dataset,
                tenant_id=shard.tenant_id,
                key_version=shard.key_version,
                uri=shard.uri,
                rows=shard.rows,
                sha256=shard.sha256,
                size_bytes=shard.bytes,
                status="active",
                created_at=utc_now(),
            )
            session.add(row)
            added.append(row)
        session.flush()
        return added

    def record_dataset_version(
        self,
        name: str,
        version: int,
        uri: str,
        rows: int,
        *,
        shards: Iterable[ShardLike] = (),
        parent_version: int | None = None,
        created_at: datetime | None = None,
        sources: Iterable[NewSource] = (),
    ) -> DatasetVersionRecord:
        """Record a published dataset version, its shards and new image sources (idempotent)."""
        with self.session() as session:
            row = session.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.name == name, DatasetVersionRow.version == version
                )
            ).one_or_none()
            if row is None:
                row = DatasetVersionRow(
                    name=name,
                    version=version,
                    uri=uri,
                    rows=rows,
                    parent_version=parent_version,
                    created_at=created_at or utc_now(),
                )
                session.add(row)
                session.flush()
            elif (row.uri, row.rows) != (uri, rows):
                raise RegistryError(
                    f"dataset {name!r} version {version} is already recorded at {row.uri} with "
                    f"{row.rows} rows; publish a new version instead"
                )
            self._add_shards(session, row, shards)
            self._add_sources(session, row, sources)
            return DatasetVersionRecord.of(row)

    def record_manifest(
        self, published: PublishedVersion, *, sources: Iterable[NewSource] = ()
    ) -> DatasetVersionRecord:
        """Record a `datasets.DatasetVersion` (as returned by `publish_version`) and its shards.

        `sources` are the batches of tenant images that entered this version; they are recorded
        in the same transaction, so a batch counts as onboarded exactly when its version does.
        """
        return self.record_dataset_version(
            published.name,
            published.version,
            published.uri,
            published.rows,
            shards=published.shards,
            parent_version=published.parent_version,
            created_at=published.created_at,
            sources=sources,
        )

    # -- tenant image sources ------------------------------------------------------------------

    def _add_sources(
        self, session: Session, dataset: DatasetVersionRow, sources: Iterable[NewSource]
    ) -> None:
        for source in sources:
            self._tenant(session, source.tenant_id)
            existing = session.scalars(
                select(TenantSource).where(
                    TenantSource.tenant_id == source.tenant_id,
                    TenantSource.fingerprint == source.fingerprint,
                )
            ).one_or_none()
            if existing is not None:
                if existing.dataset_version_id != dataset.id:
                    raise RegistryError(
                        f"images with fingerprint {source.fingerprint[:16]}… of tenant "
                        f"{source.tenant_id!r} are already recorded in dataset "
                        f"{existing.dataset_version.name!r} version "
                        f"{existing.dataset_version.version}; they are onboarded already"
                    )
                continue
            if source.images <= 0 or source.first_index < 0:
                raise RegistryError(
                    f"a source needs at least one image and a first index of 0 or more, got "
                    f"{source.images} images from index {source.first_index}"
                )
            session.add(
                TenantSource(
                    tenant_id=source.tenant_id,
                    fingerprint=source.fingerprint,
                    kind=source.kind,
                    source=source.source,
                    images=source.images,
                    first_index=source.first_index,
                    class_names=list(source.class_names),
                    dataset_version=dataset,
                    created_at=utc_now(),
                )
            )
        session.flush()

    def find_source(self, tenant_id: str, fingerprint: str) -> SourceRecord | None:
        """The recorded batch of this tenant with this fingerprint, if any."""
        with self.session() as session:
            row = session.scalars(
                select(TenantSource).where(
                    TenantSource.tenant_id == tenant_id, TenantSource.fingerprint == fingerprint
                )
            ).one_or_none()
            return None if row is None else SourceRecord.of(row)

    def list_sources(self, tenant_id: str | None = None) -> list[SourceRecord]:
        """Recorded batches of tenant images, oldest first."""
        query = select(TenantSource).order_by(TenantSource.tenant_id, TenantSource.first_index)
        if tenant_id is not None:
            query = query.where(TenantSource.tenant_id == tenant_id)
        with self.session() as session:
            return [SourceRecord.of(row) for row in session.scalars(query)]

    def next_image_index(self, tenant_id: str) -> int:
        """The first tenant-local image index no recorded batch of the tenant uses."""
        with self.session() as session:
            end = session.scalar(
                select(func.max(TenantSource.first_index + TenantSource.images)).where(
                    TenantSource.tenant_id == tenant_id
                )
            )
        return int(end or 0)

    def record_shards(
        self, dataset_name: str, dataset_version: int, shards: Iterable[ShardLike]
    ) -> list[ShardRecord]:
        """Add shards to a recorded dataset version (a shard already recorded is kept)."""
        with self.session() as session:
            dataset = self._dataset_version(session, dataset_name, dataset_version)
            return [ShardRecord.of(row) for row in self._add_shards(session, dataset, shards)]

    def list_shards(
        self,
        *,
        tenant_id: str | None = None,
        dataset_name: str | None = None,
        dataset_version: int | None = None,
        status: str | None = "active",
    ) -> list[ShardRecord]:
        """Shards, filtered by tenant, dataset (version) and status (None for any status)."""
        if status is not None and status not in SHARD_STATUSES:
            raise RegistryError(f"shard status {status!r} is not one of {SHARD_STATUSES}")
        query = select(Shard).join(Shard.dataset_version)
        if tenant_id is not None:
            query = query.where(Shard.tenant_id == tenant_id)
        if dataset_name is not None:
            query = query.where(DatasetVersionRow.name == dataset_name)
        if dataset_version is not None:
            query = query.where(DatasetVersionRow.version == dataset_version)
        if status is not None:
            query = query.where(Shard.status == status)
        query = query.order_by(DatasetVersionRow.name, DatasetVersionRow.version, Shard.uri)
        with self.session() as session:
            return [ShardRecord.of(row) for row in session.scalars(query)]

    def retire_shards(self, uris: Iterable[str]) -> int:
        """Mark shards retired; all or nothing. Returns how many were active before."""
        wanted = list(dict.fromkeys(uris))
        with self.session() as session:
            rows = session.scalars(select(Shard).where(Shard.uri.in_(wanted))).all()
            unknown = sorted(set(wanted) - {row.uri for row in rows})
            if unknown:
                raise RegistryError(
                    f"cannot retire shards that are not recorded: {', '.join(unknown[:5])}"
                    + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                )
            now = utc_now()
            retired = 0
            for row in rows:
                if row.status == "active":
                    row.status, row.retired_at = "retired", now
                    retired += 1
            return retired

    def list_dataset_versions(self, name: str | None = None) -> list[DatasetVersionRecord]:
        query = select(DatasetVersionRow).order_by(
            DatasetVersionRow.name, DatasetVersionRow.version
        )
        if name is not None:
            query = query.where(DatasetVersionRow.name == name)
        with self.session() as session:
            return [DatasetVersionRecord.of(row) for row in session.scalars(query)]

    def get_dataset_version(self, name: str, version: int) -> DatasetVersionRecord:
        with self.session() as session:
            return DatasetVersionRecord.of(self._dataset_version(session, name, version))

    # -- models --------------------------------------------------------------------------------

    def record_model_version(
        self,
        name: str,
        *,
        checkpoint_uri: str,
        model_card: dict[str, Any],
        dataset_name: str | None = None,
        dataset_version: int | None = None,
        version: int | None = None,
    ) -> ModelVersionRecord:
        """Record a trained model; `version` defaults to one past the latest of that name."""
        try:
            card = json.loads(json.dumps(model_card))
        except (TypeError, ValueError) as error:
            raise RegistryError(
                f"model card of {name!r} is not JSON-serialisable: {error}"
            ) from error
        if (dataset_name is None) != (dataset_version is None):
            raise RegistryError("give both dataset_name and dataset_version, or neither")
        with self.session() as session:
            if self._locking:
                # Two trainers finishing at once must not both take version N of one model.
                take_locks(session.connection(), [f"model-{name}"])
            dataset = (
                None
                if dataset_name is None or dataset_version is None
                else self._dataset_version(session, dataset_name, dataset_version)
            )
            latest = session.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.name == name)
            )
            if version is None:
                version = (latest or 0) + 1
            elif session.scalars(
                select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.version == version
                )
            ).first():
                raise RegistryError(
                    f"model {name!r} version {version} is already recorded; next free version is "
                    f"{(latest or 0) + 1}"
                )
            row = ModelVersion(
                name=name,
                version=version,
                dataset_version=dataset,
                model_card=card,
                checkpoint_uri=checkpoint_uri,
                created_at=utc_now(),
            )
            session.add(row)
            session.flush()
            return ModelVersionRecord.of(row)

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.version)
        if name is not None:
            query = query.where(ModelVersion.name == name)
        with self.session() as session:
            return [ModelVersionRecord.of(row) for row in session.scalars(query)]
