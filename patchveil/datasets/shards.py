"""Write and read one Parquet shard atomically, locally or on object storage, with its checksum."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from patchveil.datasets import storage
from patchveil.datasets.schema import IMAGE, TENANT_ID, ShardMetadata
from patchveil.errors import PatchveilError

SHARD_SUFFIX = ".parquet"
_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}$")


@dataclass(frozen=True)
class ShardInfo:
    """A written shard: where it is, how many rows, the SHA-256 and size of its bytes."""

    uri: str
    rows: int
    sha256: str
    bytes: int
    tenant_id: str
    key_version: int

    @property
    def name(self) -> str:
        """The file name, `<shard>.parquet`."""
        return self.uri.rstrip("/").rpartition("/")[2]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], uri: str | None = None) -> ShardInfo:
        return cls(
            uri=uri or str(data["uri"]),
            rows=int(data["rows"]),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            tenant_id=str(data["tenant_id"]),
            key_version=int(data["key_version"]),
        )


def shard_file_name(shard_name: str) -> str:
    """`<shard_name>.parquet`, refusing names a reader would skip or that leave the folder."""
    stem = shard_name.removesuffix(SHARD_SUFFIX)
    if not _SHARD_NAME.match(stem):
        raise PatchveilError(
            f"shard name {shard_name!r} is not valid: use letters, digits, '.', '_', '=' or '-', "
            "starting with a letter or digit (names starting with '_' or '.' are invisible to "
            "readers)"
        )
    return stem + SHARD_SUFFIX


def encode_shard(table: pa.Table) -> pa.Buffer:
    """The Parquet bytes of a shard table."""
    sink = pa.BufferOutputStream()
    # Encrypted pixels are unique per row: dictionary-encoding them only wastes time.
    pq.write_table(table, sink, use_dictionary=[TENANT_ID], compression="zstd")
    return sink.getvalue()


def write_shard(
    table: pa.Table, dataset_uri: str, shard_name: str, *, overwrite: bool = False
) -> ShardInfo:
    """Write `table` as `<dataset_uri>/<shard_name>.parquet`, atomically, and checksum it.

    The bytes go to a `_tmp-…` name in the same folder and are then moved onto the final name,
    so readers (Ray Data, pyarrow datasets, the manifest) never see half a shard. An existing
    shard is replaced only with `overwrite=True` (safe for a retried write into a version that is
    not published yet).
    """
    metadata = ShardMetadata.from_schema(table.schema)
    if table.num_rows == 0:
        raise PatchveilError(f"shard {shard_name!r} has no rows; write at least one image")
    if table.column(IMAGE).null_count:
        raise PatchveilError(f"shard {shard_name!r} has missing images")
    uri = storage.join_uri(dataset_uri, shard_file_name(shard_name))
    if not overwrite and storage.exists(uri):
        raise PatchveilError(
            f"shard {uri} already exists; choose another shard name or pass overwrite=True"
        )
    data = encode_shard(table)
    storage.write_bytes_atomic(uri, data)
    return ShardInfo(
        uri=uri,
        rows=table.num_rows,
        sha256=hashlib.sha256(memoryview(data)).hexdigest(),
        bytes=data.size,
        tenant_id=metadata.tenant_id,
        key_version=metadata.key_version,
    )


def read_shard(uri: str) -> pa.Table:
    """Read one shard, with its schema metadata."""
    filesystem, path = storage.resolve(uri)
    try:
        with filesystem.open_input_file(path) as source:
            return pq.read_table(source)
    except FileNotFoundError as error:
        raise PatchveilError(f"shard {uri} does not exist") from error


def read_shard_metadata(uri: str) -> tuple[ShardMetadata, int]:
    """A shard's file metadata and row count, from its footer only."""
    filesystem, path = storage.resolve(uri)
    try:
        with filesystem.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
    except FileNotFoundError as error:
        raise PatchveilError(f"shard {uri} does not exist") from error
    return ShardMetadata.from_schema(schema), rows
