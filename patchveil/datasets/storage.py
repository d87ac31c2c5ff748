"""One code path for local folders, `file://` and `s3://` URIs, through `pyarrow.fs`."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from patchveil.errors import PatchveilError

# Readers (Ray Data, pyarrow datasets) skip names starting with '_' or '.', so a temporary file
# with this prefix is never read as a shard even if a crash leaves it behind.
TEMPORARY_PREFIX = "_tmp-"
_CHUNK_BYTES = 8 << 20


def has_scheme(uri: str) -> bool:
    """True for `scheme://…` URIs, False for plain local paths."""
    return "://" in uri


def normalize_uri(uri: str | Path) -> str:
    """A local path becomes absolute; a URI with a scheme is kept, without a trailing '/'."""
    text = str(uri)
    if not text:
        raise PatchveilError("an empty string is not a storage location; give a folder or a URI")
    if has_scheme(text):
        scheme, _, rest = text.partition("://")
        return f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else text
    return str(Path(text).expanduser().absolute())


def join_uri(base: str, *parts: str) -> str:
    """`base/part/…` for local paths and URIs alike."""
    joined = normalize_uri(base)
    for part in parts:
        joined = f"{joined.rstrip('/')}/{part.strip('/')}"
    return joined


def parent_uri(uri: str) -> str:
    """The folder holding `uri`."""
    head, _, _ = normalize_uri(uri).rstrip("/").rpartition("/")
    return head


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path or URI."""
    normalized = normalize_uri(uri)
    try:
        return pafs.FileSystem.from_uri(normalized)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
        raise PatchveilError(
            f"cannot open storage location {normalized!r}: {error}; use a local folder or a "
            "URI pyarrow understands (file:///…, s3://bucket/prefix, gs://…)"
        ) from error


def same_location(first: str, second: str) -> bool:
    """True when two URIs name the same place (e.g. `/data/x` and `file:///data/x`)."""
    first_fs, first_path = resolve(first)
    second_fs, second_path = resolve(second)
    same_fs = type(first_fs) is type(second_fs) and first_fs.equals(second_fs)
    return same_fs and first_path.rstrip("/") == second_path.rstrip("/")


def exists(uri: str) -> bool:
    filesystem, path = resolve(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def list_names(folder_uri: str) -> list[str]:
    """Names (not paths) of the entries directly inside a folder; empty if there is none."""
    filesystem, path = resolve(folder_uri)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def list_folders(folder_uri: str) -> list[str]:
    """Names of the sub-folders directly inside a folder."""
    filesystem, path = resolve(folder_uri)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)


def read_bytes(uri: str) -> bytes:
    filesystem, path = resolve(uri)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def sha256_of(uri: str) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a stored file, read in chunks."""
    filesystem, path = resolve(uri)
    digest = hashlib.sha256()
    size = 0
    with filesystem.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_stream(stream: pa.NativeFile, data: memoryview) -> None:
    # One place that pushes bytes to storage, so tests can make it fail half way.
    for start in range(0, len(data), _CHUNK_BYTES):
        stream.write(data[start : start + _CHUNK_BYTES])


def _discard(filesystem: pafs.FileSystem, path: str) -> None:
    # Never written, or already gone: fine, and the '_tmp-' name keeps readers away anyway.
    with contextlib.suppress(OSError, pa.ArrowException):
        filesystem.delete_file(path)


def write_bytes_atomic(uri: str, data: bytes | pa.Buffer) -> None:
    """Write to `_tmp-<uuid>-<name>` in the same folder, then move onto `uri`.

    On a local disk the move is a rename, so a reader sees the old state or the whole new file,
    never part of it. On object stores an object only appears once its upload completes, and the
    temporary name keeps an unfinished upload out of every listing readers use. On failure the
    temporary file is removed.
    """
    filesystem, path = resolve(uri)
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{name}"
    filesystem.create_dir(folder, recursive=True)
    try:
        with filesystem.open_output_stream(temporary) as stream:
            _write_stream(stream, memoryview(data))
        filesystem.move(temporary, path)
    except BaseException:
        _discard(filesystem, temporary)
        raise


def copy_file(source_uri: str, target_uri: str) -> None:
    """Copy a stored file to a new location, atomically at the target."""
    source_fs, source_path = resolve(source_uri)
    target_fs, target_path = resolve(target_uri)
    if type(source_fs) is type(target_fs) and source_fs.equals(target_fs):
        folder, _, name = target_path.rpartition("/")
        temporary = f"{folder}/{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{name}"
        target_fs.create_dir(folder, recursive=True)
        try:
            target_fs.copy_file(source_path, temporary)  # server-side copy on object stores
            target_fs.move(temporary, target_path)
        except BaseException:
            _discard(target_fs, temporary)
            raise
        return
    write_bytes_atomic(target_uri, read_bytes(source_uri))
