"""The platform registry: tenants, datasets, shards and models in a SQL database."""

from patchveil.registry.models import (
    Base,
    DatasetVersionRow,
    ModelVersion,
    Shard,
    Tenant,
)
from patchveil.registry.registry import (
    DatasetVersionRecord,
    ModelVersionRecord,
    Registry,
    RegistryError,
    ShardRecord,
    TenantRecord,
    UnknownTenantError,
)

__all__ = [
    "Base",
    "DatasetVersionRecord",
    "DatasetVersionRow",
    "ModelVersion",
    "ModelVersionRecord",
    "Registry",
    "RegistryError",
    "Shard",
    "ShardRecord",
    "Tenant",
    "TenantRecord",
    "UnknownTenantError",
]
