"""Tests for the shard schema: columns, file metadata, numpy round trip without copies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.datasets.schema import (
    ShardMetadata,
    encrypted_batch_to_table,
    images_from_column,
    table_to_arrays,
)
from patchveil.errors import ImageFormatError, PatchveilError
from tests.datasets.factories import make_table


def test_columns_types_and_file_metadata() -> None:
    table = make_table(image_size=8)
    schema = table.schema
    assert schema.field("image").type == pa.binary(8 * 8 * 3)
    assert schema.field("label").type == pa.int64()
    assert schema.field("tenant_id").type == pa.string()
    assert schema.field("key_version").type == pa.int32()
    assert schema.field("sample_id").type == pa.string()
    assert ShardMetadata.from_schema(schema) == ShardMetadata(
        cipher="conventional", block_size=4, image_size=8, tenant_id="acme", key_version=2
    )
    assert schema.metadata[b"patchveil_format"] == b"1"
    assert table.column("tenant_id").to_pylist() == ["acme"] * 4
    assert table.column("sample_id").to_pylist()[0] == "acme-0-0"
    assert table.column("key_version").to_pylist() == [2] * 4


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 6), blocks=st.integers(1, 4), block_size=st.sampled_from([1, 2, 4]))
def test_round_trip_returns_the_same_arrays(count: int, blocks: int, block_size: int) -> None:
    image_size = blocks * block_size
    images = np.random.default_rng(count + image_size).integers(
        0, 256, (count, image_size, image_size, 3), dtype=np.uint8
    )
    labels = np.arange(count, dtype=np.int16)
    table = encrypted_batch_to_table(
        images, labels, "t1", 1, range(count), "restricted", block_size, image_size
    )
    arrays = table_to_arrays(table)
    np.testing.assert_array_equal(arrays.images, images)
    np.testing.assert_array_equal(arrays.labels, labels)
    assert arrays.sample_ids.tolist() == [str(index) for index in range(count)]
    assert arrays.tenant_ids.tolist() == ["t1"] * count
    assert arrays.key_versions.tolist() == [1] * count


def test_images_are_a_view_over_the_arrow_buffer() -> None:
    table = make_table()
    images = table_to_arrays(table).images
    column = table.column("image").chunk(0)
    assert images.ctypes.data == column.buffers()[1].address
    assert not images.flags.writeable


def test_sliced_and_chunked_columns_still_give_the_right_images() -> None:
    table = make_table(count=6)
    expected = table_to_arrays(table).images
    np.testing.assert_array_equal(table_to_arrays(table.slice(2, 3)).images, expected[2:5])
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    assert chunked.column("image").num_chunks == 2
    np.testing.assert_array_equal(table_to_arrays(chunked).images, expected)


def test_image_size_is_inferred_when_metadata_is_gone() -> None:
    table = make_table(image_size=8).replace_schema_metadata(None)
    assert table_to_arrays(table).images.shape == (4, 8, 8, 3)
    assert images_from_column(table.column("image")).shape == (4, 8, 8, 3)


def test_wrong_image_shape_is_refused_with_the_expected_shape() -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ImageFormatError, match=r"\[N, 16, 16, 3\]"):
        encrypted_batch_to_table(images, [0, 1], "acme", 1, [0, 1], "conventional", 4, 16)
    with pytest.raises(ImageFormatError, match="uint8"):
        encrypted_batch_to_table(
            images.astype(np.float32), [0, 1], "acme", 1, [0, 1], "conventional", 4, 8
        )


def test_mismatched_labels_ids_and_geometry_are_refused() -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ImageFormatError, match="labels"):
        encrypted_batch_to_table(images, [0], "acme", 1, [0, 1], "conventional", 4, 8)
    with pytest.raises(ImageFormatError, match="sample ids"):
        encrypted_batch_to_table(images, [0, 1], "acme", 1, [0], "conventional", 4, 8)
    with pytest.raises(PatchveilError, match="unique"):
        encrypted_batch_to_table(images, [0, 1], "acme", 1, [7, 7], "conventional", 4, 8)
    with pytest.raises(ImageFormatError, match="divide"):
        encrypted_batch_to_table(images, [0, 1], "acme", 1, [0, 1], "conventional", 3, 8)
    with pytest.raises(PatchveilError, match="tenant id"):
        encrypted_batch_to_table(images, [0, 1], "../x", 1, [0, 1], "conventional", 4, 8)


def test_a_table_without_patchveil_metadata_is_not_a_shard() -> None:
    with pytest.raises(PatchveilError, match="not a patchveil shard"):
        ShardMetadata.from_schema(pa.schema([pa.field("image", pa.binary(3))]))
