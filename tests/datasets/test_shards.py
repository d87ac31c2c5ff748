"""Tests for shard writing: round trip, atomicity on failure, checksums, file:// URIs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from patchveil.datasets import shards, storage
from patchveil.datasets.schema import ShardMetadata, table_to_arrays
from patchveil.datasets.shards import read_shard, read_shard_metadata, write_shard
from patchveil.errors import PatchveilError
from tests.datasets.factories import make_table


def test_round_trip_keeps_rows_columns_and_metadata(tmp_path: Path) -> None:
    table = make_table(count=5)
    info = write_shard(table, str(tmp_path / "v1"), "acme-00000")
    assert info.uri == str(tmp_path / "v1" / "acme-00000.parquet")
    assert (info.rows, info.tenant_id, info.key_version) == (5, "acme", 2)
    back = read_shard(info.uri)
    assert back.equals(table)
    assert ShardMetadata.from_schema(back.schema) == ShardMetadata.from_schema(table.schema)
    np.testing.assert_array_equal(table_to_arrays(back).images, table_to_arrays(table).images)
    assert read_shard_metadata(info.uri) == (ShardMetadata.from_schema(table.schema), 5)


def test_checksum_and_size_are_those_of_the_stored_bytes(tmp_path: Path) -> None:
    info = write_shard(make_table(), str(tmp_path), "s")
    stored = (tmp_path / "s.parquet").read_bytes()
    assert info.sha256 == hashlib.sha256(stored).hexdigest()
    assert info.bytes == len(stored)
    assert storage.sha256_of(info.uri) == (info.sha256, info.bytes)


def test_file_uri_goes_through_the_same_code(tmp_path: Path) -> None:
    folder_uri = (tmp_path / "ds" / "v1").as_uri()
    assert folder_uri.startswith("file:///")
    info = write_shard(make_table(), folder_uri, "acme-0")
    assert info.uri == f"{folder_uri}/acme-0.parquet"
    assert (tmp_path / "ds" / "v1" / "acme-0.parquet").is_file()
    assert read_shard(info.uri).num_rows == 4
    assert storage.same_location(info.uri, str(tmp_path / "ds" / "v1" / "acme-0.parquet"))


def test_failure_mid_write_leaves_no_shard_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "v1"

    def write_half_then_fail(stream: pa.NativeFile, data: memoryview) -> None:
        stream.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_write_stream", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_shard(make_table(), str(folder), "acme-0")
    assert list(folder.iterdir()) == []
    assert pads.dataset(str(folder), format="parquet").files == []


def test_failure_in_the_final_move_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_shard(make_table(seed=1), str(tmp_path), "kept")

    class FailingMove:
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

        def move(self, source: str, target: str) -> None:
            raise OSError("connection reset")

    real_resolve = storage.resolve
    monkeypatch.setattr(
        storage, "resolve", lambda uri: (FailingMove(real_resolve(uri)[0]), real_resolve(uri)[1])
    )
    with pytest.raises(OSError, match="connection reset"):
        write_shard(make_table(seed=2), str(tmp_path), "lost")
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.parquet"]
    assert read_shard(good.uri).num_rows == 4


def test_a_leftover_temporary_file_is_invisible_to_readers(tmp_path: Path) -> None:
    write_shard(make_table(), str(tmp_path), "acme-0")
    # What a killed writer leaves behind: half a file under the temporary name.
    (tmp_path / f"{storage.TEMPORARY_PREFIX}deadbeef-acme-1.parquet").write_bytes(b"PAR1\x00")
    dataset = pads.dataset(str(tmp_path), format="parquet")
    assert [Path(name).name for name in dataset.files] == ["acme-0.parquet"]
    assert dataset.to_table().num_rows == 4


def test_existing_shard_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    first = write_shard(make_table(seed=1), str(tmp_path), "s")
    with pytest.raises(PatchveilError, match="already exists"):
        write_shard(make_table(seed=2), str(tmp_path), "s")
    assert storage.sha256_of(first.uri)[0] == first.sha256
    second = write_shard(make_table(seed=2), str(tmp_path), "s", overwrite=True)
    assert second.sha256 != first.sha256


@pytest.mark.parametrize("bad", ["_hidden", ".dot", "a/b", "", "../up"])
def test_shard_names_readers_would_skip_or_that_escape_are_refused(
    tmp_path: Path, bad: str
) -> None:
    with pytest.raises(PatchveilError, match="shard name"):
        write_shard(make_table(), str(tmp_path), bad)


def test_a_table_that_is_not_a_shard_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchveilError, match="not a patchveil shard"):
        write_shard(pa.table({"x": [1]}), str(tmp_path), "s")
    with pytest.raises(PatchveilError, match="no rows"):
        write_shard(make_table().slice(0, 0), str(tmp_path), "s")


def test_reading_a_missing_shard_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(PatchveilError, match=r"nope\.parquet"):
        read_shard(missing)


def test_shard_info_json_round_trip(tmp_path: Path) -> None:
    info = write_shard(make_table(), str(tmp_path), "s")
    assert shards.ShardInfo.from_json(info.to_json()) == info
    assert info.to_json()["name"] == "s.parquet"
