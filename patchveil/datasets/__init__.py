"""Encrypted Parquet datasets (platform side: ciphertext only, never a key or a plain image)."""

from patchveil.datasets.manifest import (
    MANIFEST_NAME,
    DatasetIntegrityError,
    DatasetVersion,
    carry_over,
    list_versions,
    load_manifest,
    next_version,
    publish_version,
    verify,
    version_uri,
)
from patchveil.datasets.schema import (
    EncryptedArrays,
    ShardMetadata,
    encrypted_batch_to_table,
    images_from_column,
    shard_schema,
    table_to_arrays,
)
from patchveil.datasets.shards import ShardInfo, read_shard, read_shard_metadata, write_shard

__all__ = [
    "MANIFEST_NAME",
    "DatasetIntegrityError",
    "DatasetVersion",
    "EncryptedArrays",
    "ShardInfo",
    "ShardMetadata",
    "carry_over",
    "encrypted_batch_to_table",
    "images_from_column",
    "list_versions",
    "load_manifest",
    "next_version",
    "publish_version",
    "read_shard",
    "read_shard_metadata",
    "shard_schema",
    "table_to_arrays",
    "verify",
    "version_uri",
    "write_shard",
]
