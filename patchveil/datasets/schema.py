"""The Arrow layout of an encrypted shard: columns, file metadata, and conversion to numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from patchveil.config import check_tenant_id
from patchveil.errors import ImageFormatError, PatchveilError

FORMAT_VERSION = 1
CHANNELS = 3

IMAGE = "image"
LABEL = "label"
TENANT_ID = "tenant_id"
KEY_VERSION = "key_version"
SAMPLE_ID = "sample_id"
SPLIT = "split"
COLUMNS = (IMAGE, LABEL, TENANT_ID, KEY_VERSION, SAMPLE_ID, SPLIT)
# A tenant holds out part of its images at onboarding: the platform validates on them (each
# under that tenant's own key) and never trains on them.
SPLITS = ("train", "validation")
# A tenant may store K crop/flip variants of a training image (onboarding's augment_variants):
# their sample ids end in `:aug<k>`, k = 1..K; the original image is variant 0.
AUGMENTED_SUFFIX = ":aug"

# Schema metadata keys (bytes, as Arrow stores them).
_META_FORMAT = b"patchveil_format"
_META_CIPHER = b"cipher"
_META_BLOCK_SIZE = b"block_size"
_META_IMAGE_SIZE = b"image_size"
_META_TENANT_ID = b"tenant_id"
_META_KEY_VERSION = b"key_version"


@dataclass(frozen=True)
class ShardMetadata:
    """What a shard's file metadata says: one tenant, one key version, one cipher geometry."""

    cipher: str
    block_size: int
    image_size: int
    tenant_id: str
    key_version: int
    patchveil_format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        if not self.cipher:
            raise PatchveilError(
                "a shard needs the name of the cipher its images were encrypted with"
            )
        if self.block_size <= 0 or self.image_size <= 0 or self.image_size % self.block_size:
            raise ImageFormatError(
                f"block size {self.block_size} must be positive and divide image size "
                f"{self.image_size}"
            )
        if self.key_version < 1:
            raise PatchveilError(f"key version must be 1 or more, got {self.key_version}")

    def to_arrow(self) -> dict[bytes, bytes]:
        return {
            _META_FORMAT: str(self.patchveil_format).encode(),
            _META_CIPHER: self.cipher.encode(),
            _META_BLOCK_SIZE: str(self.block_size).encode(),
            _META_IMAGE_SIZE: str(self.image_size).encode(),
            _META_TENANT_ID: self.tenant_id.encode(),
            _META_KEY_VERSION: str(self.key_version).encode(),
        }

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> ShardMetadata:
        """Read the metadata back; a file without it was not written by patchveil."""
        metadata = schema.metadata or {}
        missing = [key.decode() for key in cls._keys() if key not in metadata]
        if missing:
            raise PatchveilError(
                f"not a patchveil shard: its schema metadata lacks {', '.join(missing)}"
            )
        return cls(
            cipher=metadata[_META_CIPHER].decode(),
            block_size=int(metadata[_META_BLOCK_SIZE]),
            image_size=int(metadata[_META_IMAGE_SIZE]),
            tenant_id=metadata[_META_TENANT_ID].decode(),
            key_version=int(metadata[_META_KEY_VERSION]),
            patchveil_format=int(metadata[_META_FORMAT]),
        )

    @staticmethod
    def _keys() -> tuple[bytes, ...]:
        return (
            _META_FORMAT,
            _META_CIPHER,
            _META_BLOCK_SIZE,
            _META_IMAGE_SIZE,
            _META_TENANT_ID,
            _META_KEY_VERSION,
        )


def shard_schema(metadata: ShardMetadata) -> pa.Schema:
    """The Arrow schema of a shard, with its file metadata attached."""
    width = metadata.image_size * metadata.image_size * CHANNELS
    return pa.schema(
        [
            pa.field(IMAGE, pa.binary(width), nullable=False),
            pa.field(LABEL, pa.int64(), nullable=False),
            pa.field(TENANT_ID, pa.string(), nullable=False),
            pa.field(KEY_VERSION, pa.int32(), nullable=False),
            pa.field(SAMPLE_ID, pa.string(), nullable=False),
            pa.field(SPLIT, pa.string(), nullable=False),
        ],
        metadata=metadata.to_arrow(),
    )


class EncryptedArrays(NamedTuple):
    """A shard as numpy arrays; `images` is a read-only view over the Arrow buffer."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int64 [N]
    tenant_ids: np.ndarray  # object (str) [N]
    key_versions: np.ndarray  # int32 [N]
    sample_ids: np.ndarray  # object (str) [N]
    splits: np.ndarray  # object (str) [N]: "train" or "validation"


def encrypted_batch_to_table(
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    tenant_id: str,
    key_version: int,
    sample_ids: Sequence[str | int] | np.ndarray,
    cipher_name: str,
    block_size: int,
    image_size: int,
    split: str = "train",
) -> pa.Table:
    """Build a shard table from encrypted images of one tenant and one key version.

    The images are not copied when they are already C-contiguous uint8: the Arrow column is a
    view over the numpy buffer.
    """
    metadata = ShardMetadata(
        cipher=cipher_name,
        block_size=int(block_size),
        image_size=int(image_size),
        tenant_id=tenant_id,
        key_version=int(key_version),
    )
    images = np.asarray(images)
    expected = (image_size, image_size, CHANNELS)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise ImageFormatError(
            f"encrypted images must be uint8 of shape [N, {image_size}, {image_size}, 3], got "
            f"{images.dtype} {list(images.shape)}"
        )
    count = images.shape[0]
    labels_array = np.asarray(labels)
    if labels_array.shape != (count,) or not np.issubdtype(labels_array.dtype, np.integer):
        raise ImageFormatError(
            f"labels must be {count} integers (one per image), got {labels_array.dtype} "
            f"{list(labels_array.shape)}"
        )
    sample_id_list = [str(sample_id) for sample_id in np.asarray(sample_ids).tolist()]
    if len(sample_id_list) != count:
        raise ImageFormatError(
            f"sample ids must be {count} values (one per image), got {len(sample_id_list)}"
        )
    if len(set(sample_id_list)) != count:
        raise PatchveilError("sample ids within a shard must be unique; found duplicates")

    if split not in SPLITS:
        raise PatchveilError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")

    schema = shard_schema(metadata)
    pixels = np.ascontiguousarray(images).reshape(-1)
    image_column = pa.FixedSizeBinaryArray.from_buffers(
        schema.field(IMAGE).type, count, [None, pa.py_buffer(pixels)]
    )
    columns = [
        image_column,
        pa.array(labels_array.astype(np.int64, copy=False), type=pa.int64()),
        pa.array([tenant_id] * count, type=pa.string()),
        pa.array(np.full(count, key_version, dtype=np.int32), type=pa.int32()),
        pa.array(sample_id_list, type=pa.string()),
        pa.array([split] * count, type=pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _square_side(width: int) -> int:
    side = math.isqrt(width // CHANNELS)
    if side * side * CHANNELS != width:
        raise ImageFormatError(
            f"an image column of {width} bytes per row is not a square RGB image; give image_size"
        )
    return side


def images_from_column(
    column: pa.Array | pa.ChunkedArray, image_size: int | None = None
) -> np.ndarray:
    """Encrypted images [N, H, W, 3] uint8 from a `fixed_size_binary` column, without copying."""
    if isinstance(column, pa.ChunkedArray):
        # One chunk is a view; several must be concatenated once.
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_fixed_size_binary(column.type):
        raise ImageFormatError(
            f"the image column must be fixed_size_binary(H*W*3), got {column.type}"
        )
    if column.null_count:
        raise ImageFormatError(f"the image column has {column.null_count} missing images")
    width = column.type.byte_width
    side = image_size if image_size is not None else _square_side(width)
    if side * side * CHANNELS != width:
        raise ImageFormatError(
            f"image size {side} needs {side * side * CHANNELS} bytes per image; the column "
            f"holds {width}"
        )
    count = len(column)
    if count == 0:
        return np.empty((0, side, side, CHANNELS), dtype=np.uint8)
    data = column.buffers()[1]
    flat = np.frombuffer(data, dtype=np.uint8, count=count * width, offset=column.offset * width)
    images = flat.reshape(count, side, side, CHANNELS)
    images.flags.writeable = False  # Arrow data is immutable; copy before changing it
    return images


def table_to_arrays(table: pa.Table | pa.RecordBatch) -> EncryptedArrays:
    """Numpy arrays from a shard table (or a Ray Data batch in pyarrow format)."""
    missing = [name for name in COLUMNS if name not in table.schema.names]
    if missing:
        raise PatchveilError(f"not a patchveil shard table: missing columns {', '.join(missing)}")
    image_size = None
    if table.schema.metadata and _META_IMAGE_SIZE in table.schema.metadata:
        image_size = int(table.schema.metadata[_META_IMAGE_SIZE])
    return EncryptedArrays(
        images=images_from_column(table.column(IMAGE), image_size),
        labels=table.column(LABEL).to_numpy(),
        tenant_ids=np.asarray(table.column(TENANT_ID).to_pylist(), dtype=object),
        key_versions=table.column(KEY_VERSION).to_numpy(),
        sample_ids=np.asarray(table.column(SAMPLE_ID).to_pylist(), dtype=object),
        splits=np.asarray(table.column(SPLIT).to_pylist(), dtype=object),
    )


def augmented_variants(sample_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The variant number of each row: k for a sample id ending in `:aug<k>`, 0 otherwise."""
    import pyarrow.compute as pc

    found = pc.extract_regex(sample_ids, rf"{AUGMENTED_SUFFIX}(?P<k>\d+)$")
    numbers = pc.cast(pc.struct_field(found, [0]), pa.int64())
    return np.asarray(pc.fill_null(numbers, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
