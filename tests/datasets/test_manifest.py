"""Tests for dataset versions: publish, load, list, verify, carry-over and immutability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.datasets import (
    MANIFEST_NAME,
    DatasetIntegrityError,
    DatasetVersion,
    list_versions,
    load_manifest,
    next_version,
    publish_version,
    verify,
    version_uri,
    write_shard,
)
from patchveil.errors import PatchveilError
from tests.datasets.factories import make_table


def publish_two_tenants(root: str, name: str = "cifar") -> DatasetVersion:
    folder = version_uri(root, name, 1)
    written = [
        write_shard(make_table(count=3, tenant_id="acme", key_version=1, seed=1), folder, "a-0"),
        write_shard(make_table(count=5, tenant_id="bolt", key_version=1, seed=2), folder, "b-0"),
    ]
    return publish_version(root, name, 1, written)


def test_published_version_lists_shards_tenants_and_geometry(tmp_path: Path) -> None:
    root = str(tmp_path / "datasets")
    published = publish_two_tenants(root)
    assert published.uri == str(tmp_path / "datasets" / "cifar" / "v1")
    assert published.rows == 8
    assert published.tenant_ids == ["acme", "bolt"]
    assert published.key_versions == {"acme": [1], "bolt": [1]}
    assert (published.cipher, published.block_size, published.image_size) == ("conventional", 4, 8)
    assert published.parent_version is None
    manifest = json.loads((Path(published.uri) / MANIFEST_NAME).read_text())
    assert manifest["rows"] == 8
    assert [shard["name"] for shard in manifest["shards"]] == ["a-0.parquet", "b-0.parquet"]
    assert {"uri", "rows", "sha256", "bytes", "tenant_id", "key_version"} <= set(
        manifest["shards"][0]
    )
    assert manifest["tenants"] == {"acme": [1], "bolt": [1]}
    verify(published)


def test_load_manifest_from_folder_or_file_gives_the_same_version(tmp_path: Path) -> None:
    published = publish_two_tenants(str(tmp_path))
    assert load_manifest(published.uri) == published
    assert load_manifest(published.manifest_uri) == published
    assert load_manifest(Path(published.uri).as_uri()).rows == 8


def test_an_unpublished_version_is_invisible(tmp_path: Path) -> None:
    root = str(tmp_path)
    publish_two_tenants(root)
    # A writer that died after writing a shard but before the manifest.
    write_shard(make_table(), version_uri(root, "cifar", 2), "a-0")
    assert [(v.name, v.version) for v in list_versions(root)] == [("cifar", 1)]
    with pytest.raises(PatchveilError, match="never published"):
        load_manifest(version_uri(root, "cifar", 2))
    assert next_version(root, "cifar") == 3


def test_list_versions_across_datasets(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert list_versions(root) == []
    publish_two_tenants(root, "alpha")
    publish_two_tenants(root, "beta")
    assert [(v.name, v.version) for v in list_versions(root)] == [("alpha", 1), ("beta", 1)]
    assert [v.name for v in list_versions(root, "beta")] == ["beta"]


def test_new_version_carries_other_tenants_shards_over(tmp_path: Path) -> None:
    root = str(tmp_path)
    first = publish_two_tenants(root)
    folder = version_uri(root, "cifar", 2)
    rotated = write_shard(
        make_table(count=3, tenant_id="acme", key_version=2, seed=9), folder, "a-0"
    )
    second = publish_version(
        root, "cifar", 2, [rotated], parent_version=1, carried_shards=first.shards_of("bolt")
    )
    assert second.parent_version == 1
    assert second.key_versions == {"acme": [2], "bolt": [1]}
    assert sorted(path.name for path in Path(second.uri).iterdir()) == [
        MANIFEST_NAME,
        "a-0.parquet",
        "b-0.parquet",
    ]
    verify(second)
    verify(first)  # the old version is untouched


def test_published_versions_are_immutable(tmp_path: Path) -> None:
    root = str(tmp_path)
    published = publish_two_tenants(root)
    with pytest.raises(PatchveilError, match=r"already published.*next free: 2"):
        publish_version(root, "cifar", 1, published.shards)


def test_shards_must_share_one_cipher_geometry(tmp_path: Path) -> None:
    folder = version_uri(str(tmp_path), "mixed", 1)
    shards = [
        write_shard(make_table(block_size=4), folder, "a"),
        write_shard(make_table(block_size=2, tenant_id="bolt"), folder, "b"),
    ]
    with pytest.raises(PatchveilError, match="share cipher, block size and image size"):
        publish_version(str(tmp_path), "mixed", 1, shards)
    assert not (Path(folder) / MANIFEST_NAME).exists()


def test_a_shard_outside_the_version_folder_is_refused(tmp_path: Path) -> None:
    stray = write_shard(make_table(), str(tmp_path / "elsewhere"), "a")
    with pytest.raises(PatchveilError, match="not in the version folder"):
        publish_version(str(tmp_path), "cifar", 1, [stray])


def test_a_shard_announced_wrongly_is_refused(tmp_path: Path) -> None:
    folder = version_uri(str(tmp_path), "cifar", 1)
    shard = write_shard(make_table(count=4), folder, "a")
    lying = type(shard)(**{**shard.__dict__, "rows": 40})
    with pytest.raises(DatasetIntegrityError, match="40 rows"):
        publish_version(str(tmp_path), "cifar", 1, [lying])


def test_verify_detects_altered_missing_and_unlisted_shards(tmp_path: Path) -> None:
    published = publish_two_tenants(str(tmp_path))
    folder = Path(published.uri)
    (folder / "a-0.parquet").write_bytes(b"tampered")
    with pytest.raises(DatasetIntegrityError, match=r"a-0\.parquet has SHA-256"):
        verify(published)
    (folder / "a-0.parquet").unlink()
    with pytest.raises(DatasetIntegrityError, match=r"a-0\.parquet is missing"):
        verify(published)

    again = publish_two_tenants(str(tmp_path), "other")
    write_shard(make_table(seed=5), again.uri, "intruder")
    with pytest.raises(DatasetIntegrityError, match=r"intruder\.parquet is not in the manifest"):
        verify(again)


def test_publishing_refuses_a_folder_with_stray_shards(tmp_path: Path) -> None:
    folder = version_uri(str(tmp_path), "cifar", 1)
    kept = write_shard(make_table(seed=1), folder, "a-0")
    write_shard(make_table(seed=2), folder, "abandoned")
    with pytest.raises(PatchveilError, match=r"abandoned\.parquet"):
        publish_version(str(tmp_path), "cifar", 1, [kept])


def test_shard_uris_follow_the_folder_spelling(tmp_path: Path) -> None:
    root = str(tmp_path)
    shard = write_shard(make_table(), Path(version_uri(root, "cifar", 1)).as_uri(), "a-0")
    published = publish_version(root, "cifar", 1, [shard])
    assert published.shard_uris == [version_uri(root, "cifar", 1) + "/a-0.parquet"]
    assert load_manifest(published.uri) == published


def test_bad_dataset_names_and_versions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchveilError, match="dataset name"):
        version_uri(str(tmp_path), "../up", 1)
    with pytest.raises(PatchveilError, match="start at 1"):
        version_uri(str(tmp_path), "cifar", 0)
    with pytest.raises(PatchveilError, match="at least one shard"):
        publish_version(str(tmp_path), "cifar", 1, [])
