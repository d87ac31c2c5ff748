"""Atomic local writes: write to a temporary name beside the target, then rename (or link)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path | str, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto the target.

    On any error the temporary file is removed and the target is untouched, so a reader never
    sees half a file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        if mode is not None:
            os.chmod(temporary, mode)
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: Path | str, data: bytes, mode: int | None = None) -> None:
    """Replace `target` with `data` atomically and durably (fsync of the file and its folder)."""
    with atomic_path(target, mode) as temporary, open(temporary, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    fsync_directory(Path(target).parent)


def fsync_directory(folder: Path | str) -> None:
    """Make a rename inside `folder` durable (a crash after it cannot undo it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_exclusive(target: Path | str, data: bytes, mode: int | None = None) -> bool:
    """Write `data` to `target` only if no file is there yet, atomically; False if one was.

    The new file appears whole or not at all (written under a temporary name, then hard-linked
    to the target, which fails rather than replace an existing file): used where overwriting
    would destroy something that cannot be made again, such as a key store's master key.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        if mode is not None:
            os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        fsync_directory(target.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)
