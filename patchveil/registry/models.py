"""The registry's tables: tenants, dataset versions, shards and model versions (SQLAlchemy 2.0)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TENANT_STATUSES = ("active", "suspended")
SHARD_STATUSES = ("active", "retired")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every registry table."""


class Tenant(Base):
    """A tenant: its cipher geometry, current key version and hashed API token (never a key)."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint(f"status IN {TENANT_STATUSES!r}", name="tenant_status"),
        CheckConstraint("block_size > 0 AND image_size > 0", name="tenant_geometry"),
        CheckConstraint("key_version >= 1", name="tenant_key_version"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cipher: Mapped[str] = mapped_column(String(64))
    block_size: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    key_version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="active")
    api_token_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class DatasetVersionRow(Base):
    """One published dataset version (its manifest lives at `uri`)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="dataset_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(2048))
    rows: Mapped[int] = mapped_column(BigInteger)
    parent_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    shards: Mapped[list[Shard]] = relationship(back_populates="dataset_version")


class Shard(Base):
    """One Parquet shard of one tenant and key version inside a dataset version."""

    __tablename__ = "shards"
    __table_args__ = (CheckConstraint(f"status IN {SHARD_STATUSES!r}", name="shard_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    key_version: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    dataset_version: Mapped[DatasetVersionRow] = relationship(back_populates="shards")


class TenantSource(Base):
    """A batch of a tenant's images that entered a dataset version: a fingerprint, never pixels.

    It makes onboarding idempotent (the same images twice are recognised) and hands out the
    tenant-local image indices (sample ids and per-image nonces) without reusing one.
    """

    __tablename__ = "tenant_sources"
    __table_args__ = (
        UniqueConstraint("tenant_id", "fingerprint", name="tenant_source_fingerprint"),
        CheckConstraint("images > 0 AND first_index >= 0", name="tenant_source_indices"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(2048))
    images: Mapped[int] = mapped_column(BigInteger)
    first_index: Mapped[int] = mapped_column(BigInteger)
    class_names: Mapped[list[str]] = mapped_column(JSON)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    dataset_version: Mapped[DatasetVersionRow] = relationship()


class ModelVersion(Base):
    """A trained model: which dataset version it saw, its model card and checkpoint."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="model_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), default=None
    )
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON)
    checkpoint_uri: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    dataset_version: Mapped[DatasetVersionRow | None] = relationship()
