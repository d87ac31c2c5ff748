"""The platform registry: tenants, datasets, shards and models in a SQL database."""

from patchveil.registry.models import (
    Base,
    DatasetVersionRow,
    ModelVersion,
    Shard,
    Tenant,
    TenantSource,
)
from patchveil.registry.registry import (
    DatasetVersionRecord,
    ModelVersionRecord,
    NewSource,
    Registry,
    RegistryError,
    ShardRecord,
    SourceRecord,
    TenantRecord,
    UnknownTenantError,
)

__all__ = [
    "Base",
    "DatasetVersionRecord",
    "DatasetVersionRow",
    "ModelVersion",
    "ModelVersionRecord",
    "NewSource",
    "Registry",
    "RegistryError",
    "Shard",
    "ShardRecord",
    "SourceRecord",
    "Tenant",
    "TenantRecord",
    "TenantSource",
    "UnknownTenantError",
]
