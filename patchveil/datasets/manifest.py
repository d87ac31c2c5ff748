"""Dataset versions: a folder of shards plus `_manifest.json`, written atomically and last.

Layout: `<dataset_root>/<dataset_name>/v<N>/` holds `*.parquet` shards and `_manifest.json`.
A version exists once its manifest does; a reader that trusts only the manifest never sees a
half-written version, and `ray.data.read_parquet(<version folder>)` reads the shards as is
(it skips `_manifest.json` and any `_tmp-…` leftovers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from patchveil.datasets import storage
from patchveil.datasets.schema import FORMAT_VERSION
from patchveil.datasets.shards import SHARD_SUFFIX, ShardInfo, read_shard_metadata
from patchveil.errors import PatchveilError

MANIFEST_NAME = "_manifest.json"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION_FOLDER = re.compile(r"^v(\d+)$")


class DatasetIntegrityError(PatchveilError):
    """A published dataset version does not match its manifest (missing, altered or extra files)."""


def check_dataset_name(dataset_name: str) -> str:
    if not _DATASET_NAME.match(dataset_name):
        raise PatchveilError(
            f"dataset name {dataset_name!r} is not valid: use 1–128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return dataset_name


def version_uri(dataset_root: str, dataset_name: str, version: int) -> str:
    """The folder of one dataset version, `<dataset_root>/<dataset_name>/v<version>`."""
    if version < 1:
        raise PatchveilError(f"dataset versions start at 1, got {version}")
    return storage.join_uri(dataset_root, check_dataset_name(dataset_name), f"v{version}")


@dataclass(frozen=True)
class DatasetVersion:
    """One published version of a dataset, as its manifest describes it."""

    name: str
    version: int
    uri: str
    shards: tuple[ShardInfo, ...]
    cipher: str
    block_size: int
    image_size: int
    created_at: datetime
    parent_version: int | None = None
    patchveil_format: int = FORMAT_VERSION

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def manifest_uri(self) -> str:
        return storage.join_uri(self.uri, MANIFEST_NAME)

    @property
    def shard_uris(self) -> list[str]:
        return [shard.uri for shard in self.shards]

    @property
    def tenant_ids(self) -> list[str]:
        return sorted({shard.tenant_id for shard in self.shards})

    @property
    def key_versions(self) -> dict[str, list[int]]:
        """Key versions present per tenant."""
        found: dict[str, set[int]] = {}
        for shard in self.shards:
            found.setdefault(shard.tenant_id, set()).add(shard.key_version)
        return {tenant_id: sorted(found[tenant_id]) for tenant_id in sorted(found)}

    def shards_of(self, tenant_id: str) -> list[ShardInfo]:
        return [shard for shard in self.shards if shard.tenant_id == tenant_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "patchveil_format": self.patchveil_format,
            "dataset": self.name,
            "version": self.version,
            "uri": self.uri,
            "created_at": self.created_at.isoformat(),
            "parent_version": self.parent_version,
            "cipher": self.cipher,
            "block_size": self.block_size,
            "image_size": self.image_size,
            "rows": self.rows,
            "tenants": self.key_versions,
            "shards": [shard.to_json() for shard in self.shards],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], uri: str) -> DatasetVersion:
        """Rebuild from a manifest found at `uri`; shard URIs follow the folder, not the file."""
        return cls(
            name=str(data["dataset"]),
            version=int(data["version"]),
            uri=uri,
            shards=tuple(
                ShardInfo.from_json(shard, storage.join_uri(uri, str(shard["name"])))
                for shard in data["shards"]
            ),
            cipher=str(data["cipher"]),
            block_size=int(data["block_size"]),
            image_size=int(data["image_size"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            parent_version=None if data["parent_version"] is None else int(data["parent_version"]),
            patchveil_format=int(data["patchveil_format"]),
        )


def _versions_in(dataset_uri: str) -> list[int]:
    found = (_VERSION_FOLDER.match(name) for name in storage.list_folders(dataset_uri))
    return sorted(int(match.group(1)) for match in found if match)


def next_version(dataset_root: str, dataset_name: str) -> int:
    """One past the highest `v<N>` folder, published or not, so an unfinished one is not reused."""
    dataset_uri = storage.join_uri(dataset_root, check_dataset_name(dataset_name))
    return max(_versions_in(dataset_uri), default=0) + 1


def _checked_shard(shard: ShardInfo, folder: str) -> tuple[str, int, int]:
    """Check a shard lies in `folder` and agrees with its footer; return its cipher geometry."""
    if not storage.same_location(storage.parent_uri(shard.uri), folder):
        raise PatchveilError(
            f"shard {shard.uri} is not in the version folder {folder}; write it there (or carry "
            "it over from the parent version) so read_parquet on the folder finds it"
        )
    metadata, rows = read_shard_metadata(shard.uri)
    if rows != shard.rows or (metadata.tenant_id, metadata.key_version) != (
        shard.tenant_id,
        shard.key_version,
    ):
        raise DatasetIntegrityError(
            f"shard {shard.uri} holds {rows} rows of tenant {metadata.tenant_id!r} key version "
            f"{metadata.key_version}, but was announced as {shard.rows} rows of tenant "
            f"{shard.tenant_id!r} key version {shard.key_version}"
        )
    return metadata.cipher, metadata.block_size, metadata.image_size


def _unlisted_shards(folder: str, listed: set[str]) -> list[str]:
    """Names of `.parquet` files a folder reader would see that are not in `listed`."""
    return [
        name
        for name in storage.list_names(folder)
        if name.endswith(SHARD_SUFFIX) and not name.startswith(("_", ".")) and name not in listed
    ]


def carry_over(shards: Sequence[ShardInfo], target_version_uri: str) -> list[ShardInfo]:
    """Copy shards of an earlier version into a new version folder (same names, same bytes).

    A copy already there with the right checksum (from an interrupted earlier attempt) is kept.
    """
    carried = []
    for shard in shards:
        target = storage.join_uri(target_version_uri, shard.name)
        if not storage.exists(target):
            storage.copy_file(shard.uri, target)
        elif storage.sha256_of(target) != (shard.sha256, shard.bytes):
            raise PatchveilError(
                f"cannot carry {shard.uri} over: a different file already exists at {target}"
            )
        carried.append(
            ShardInfo(
                uri=target,
                rows=shard.rows,
                sha256=shard.sha256,
                bytes=shard.bytes,
                tenant_id=shard.tenant_id,
                key_version=shard.key_version,
            )
        )
    return carried


def publish_version(
    dataset_root: str,
    dataset_name: str,
    version: int,
    shards: Sequence[ShardInfo],
    *,
    parent_version: int | None = None,
    carried_shards: Sequence[ShardInfo] = (),
    created_at: datetime | None = None,
) -> DatasetVersion:
    """Publish `v<version>`: carry shards over from the parent, check all, write the manifest last.

    `shards` must already be written into the version folder (`version_uri(...)`);
    `carried_shards` (e.g. other tenants' shards of the parent version) are copied in first.
    Every shard's footer is checked against what it claims (rows, tenant, key version) and all
    shards must share one cipher, block size and image size. A published version is immutable:
    publishing it again is an error.
    """
    folder = version_uri(dataset_root, dataset_name, version)
    manifest_uri = storage.join_uri(folder, MANIFEST_NAME)
    if storage.exists(manifest_uri):
        raise PatchveilError(
            f"dataset {dataset_name!r} version {version} is already published at {folder}; "
            f"publish a new version (next free: {next_version(dataset_root, dataset_name)})"
        )
    if parent_version is not None and not 1 <= parent_version < version:
        raise PatchveilError(
            f"parent version {parent_version} must be an earlier version than {version}"
        )
    all_shards = [*shards, *carry_over(carried_shards, folder)]
    if not all_shards:
        raise PatchveilError(f"dataset {dataset_name!r} version {version} needs at least one shard")
    names = [shard.name for shard in all_shards]
    if len(set(names)) != len(names):
        raise PatchveilError(f"shard names repeat in dataset {dataset_name!r} version {version}")
    geometries = {}
    for shard in all_shards:
        geometries.setdefault(_checked_shard(shard, folder), shard.uri)
    if len(geometries) > 1:
        described = "; ".join(
            f"cipher {cipher} block size {block} image size {image} (e.g. {uri})"
            for (cipher, block, image), uri in geometries.items()
        )
        raise PatchveilError(
            f"all shards of one dataset version must share cipher, block size and image size; "
            f"found {described}. Put other configurations in a dataset of their own"
        )
    unlisted = _unlisted_shards(folder, set(names))
    if unlisted:
        raise PatchveilError(
            f"{folder} holds shards that are not being published ({', '.join(unlisted)}); "
            "read_parquet on the folder would read them too: delete them or publish them"
        )
    (cipher, block_size, image_size), _ = next(iter(geometries.items()))
    # Shard URIs follow the folder's spelling, exactly as load_manifest rebuilds them.
    located = [replace(shard, uri=storage.join_uri(folder, shard.name)) for shard in all_shards]
    published = DatasetVersion(
        name=dataset_name,
        version=version,
        uri=folder,
        shards=tuple(sorted(located, key=lambda shard: shard.name)),
        cipher=cipher,
        block_size=block_size,
        image_size=image_size,
        created_at=created_at or datetime.now(UTC),
        parent_version=parent_version,
    )
    storage.write_bytes_atomic(
        manifest_uri, json.dumps(published.to_json(), indent=2, sort_keys=True).encode()
    )
    return published


def load_manifest(uri: str) -> DatasetVersion:
    """Load a version from its folder URI or the URI of its `_manifest.json`."""
    normalized = storage.normalize_uri(uri)
    if normalized.endswith("/" + MANIFEST_NAME):
        folder, manifest_uri = storage.parent_uri(normalized), normalized
    else:
        folder, manifest_uri = normalized, storage.join_uri(normalized, MANIFEST_NAME)
    if not storage.exists(manifest_uri):
        raise PatchveilError(
            f"no dataset manifest at {manifest_uri}: that version was never published (or "
            "publishing did not finish); list published versions with list_versions(dataset_root)"
        )
    try:
        data = json.loads(storage.read_bytes(manifest_uri))
        return DatasetVersion.from_json(data, folder)
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetIntegrityError(f"manifest {manifest_uri} is unreadable: {error}") from error


def list_versions(dataset_root: str, dataset_name: str | None = None) -> list[DatasetVersion]:
    """Every published version under the root (or of one dataset), by name then version."""
    names = (
        [check_dataset_name(dataset_name)]
        if dataset_name is not None
        else [name for name in storage.list_folders(dataset_root) if _DATASET_NAME.match(name)]
    )
    published = []
    for name in names:
        dataset_uri = storage.join_uri(dataset_root, name)
        for version in _versions_in(dataset_uri):
            folder = storage.join_uri(dataset_uri, f"v{version}")
            if storage.exists(storage.join_uri(folder, MANIFEST_NAME)):
                published.append(load_manifest(folder))
    return published


def verify(manifest: DatasetVersion) -> None:
    """Check every shard's checksum and size, and that the folder holds no unlisted shard.

    An unlisted `.parquet` file would be read by `read_parquet(<version folder>)` although the
    manifest does not know it, so it counts as corruption.
    """
    problems = []
    listed = {shard.name for shard in manifest.shards}
    for shard in manifest.shards:
        if not storage.exists(shard.uri):
            problems.append(f"{shard.uri} is missing")
            continue
        sha256, size = storage.sha256_of(shard.uri)
        if (sha256, size) != (shard.sha256, shard.bytes):
            problems.append(
                f"{shard.uri} has SHA-256 {sha256[:16]}… ({size} bytes), manifest says "
                f"{shard.sha256[:16]}… ({shard.bytes} bytes)"
            )
    for name in _unlisted_shards(manifest.uri, listed):
        problems.append(f"{storage.join_uri(manifest.uri, name)} is not in the manifest")
    if problems:
        raise DatasetIntegrityError(
            f"dataset {manifest.name!r} version {manifest.version} at {manifest.uri} does not "
            f"match its manifest: {'; '.join(problems)}"
        )
