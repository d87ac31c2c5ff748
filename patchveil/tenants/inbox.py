"""The tenant's inbox folder: dropped image files gathered into batches (tenant side: plain images).

Images are dropped in `<inbox>/<class>/<file>`. New files move to `processing/<batch>/<class>/`;
each batch is decoded into `processing/<batch>.npz` (a source like any other); once published,
its files move to `processed/<batch>/`. Files that do not fit move to `rejected/<batch>/`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from patchveil.errors import ImageFormatError, PatchveilError, SourceError
from patchveil.fsutil import atomic_path
from patchveil.protocol import RejectedFile
from patchveil.tenants.sources.folders import IMAGE_SUFFIXES, read_image

# These sub-folders of the inbox are ours; every other one is a class.
INBOX_PROCESSING = "processing"
INBOX_PROCESSED = "processed"
INBOX_REJECTED = "rejected"
INBOX_RESERVED = frozenset({INBOX_PROCESSING, INBOX_PROCESSED, INBOX_REJECTED})


def move_new_files(inbox: Path) -> None:
    """Move newly dropped files into a new batch folder `processing/<time>-<random>/`."""
    new_files = dropped_files(inbox)
    if not new_files:
        return
    batch = (
        inbox
        / INBOX_PROCESSING
        / (datetime.now(UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8])
    )
    for path in new_files:
        target = batch / path.relative_to(inbox)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def unpacked_batches(inbox: Path) -> Iterator[Path]:
    """Batch folders not yet decoded (new ones, and those an interrupted run left)."""
    processing = inbox / INBOX_PROCESSING
    for folder in sorted(p for p in processing.glob("*") if p.is_dir()):
        if not folder.with_suffix(".npz").exists():
            yield folder


def packed_batches(inbox: Path) -> list[Path]:
    """The decoded batches, `processing/<batch>.npz`, ready to encrypt."""
    return sorted((inbox / INBOX_PROCESSING).glob("*.npz"))


def pack_batch(
    folder: Path, class_names: Sequence[str], image_size: int, tenant_id: str
) -> list[RejectedFile]:
    """Decode a batch folder into `<folder>.npz`; move files that do not fit to `rejected/`.

    `<class>` is one of `class_names` or an integer label; images must be `image_size` square.
    """
    inbox = folder.parent.parent
    images, labels, rejected = [], [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        try:
            label = label_for(relative.parts[0] if len(relative.parts) > 1 else "", class_names)
            image = read_image(path)
            if image.shape[:2] != (image_size, image_size):
                raise ImageFormatError(
                    f"{relative} is {image.shape[1]}×{image.shape[0]}; tenant "
                    f"{tenant_id!r} encrypts {image_size}×{image_size} images"
                )
        except PatchveilError as error:
            target = inbox / INBOX_REJECTED / folder.name / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            rejected.append(RejectedFile(file=str(relative), reason=str(error)))
            continue
        images.append(image)
        labels.append(label)
    if not images:
        shutil.rmtree(folder, ignore_errors=True)
        return rejected
    names = list(class_names) or [str(label) for label in range(max(labels) + 1)]
    with atomic_path(folder.with_suffix(".npz")) as temporary, open(temporary, "wb") as out:
        np.savez(
            out,
            images=np.stack(images),
            labels=np.asarray(labels, dtype=np.int64),
            class_names=np.asarray(names, dtype=np.str_),
        )
    return rejected


def archive_batch(inbox: Path, source: str, tenant_id: str) -> Path:
    """Move a published batch's files to `processed/<batch>/` and drop its `.npz`; return where."""
    archive = Path(source)
    if archive.parent != inbox / INBOX_PROCESSING or archive.suffix != ".npz":
        raise PatchveilError(f"{source} is not an inbox batch of tenant {tenant_id!r}")
    target = inbox / INBOX_PROCESSED / archive.stem
    folder = archive.with_suffix("")
    if folder.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
    archive.unlink(missing_ok=True)
    return target


def dropped_files(inbox: Path) -> list[Path]:
    """Image files in `<inbox>/<class>/…`, skipping hidden entries and our own sub-folders."""
    if not inbox.is_dir():
        return []
    found = []
    for path in sorted(inbox.rglob("*")):
        parts = path.relative_to(inbox).parts
        if (
            len(parts) >= 2
            and parts[0] not in INBOX_RESERVED
            and not any(part.startswith(".") for part in parts)
            and path.suffix.lower() in IMAGE_SUFFIXES
            and path.is_file()
        ):
            found.append(path)
    return found


def label_for(class_folder: str, class_names: Sequence[str]) -> int:
    """The label a class folder names: its position in `class_names`, or an integer label."""
    if class_folder in class_names:
        return list(class_names).index(class_folder)
    if class_folder.isdigit() and (not class_names or int(class_folder) < len(class_names)):
        return int(class_folder)
    known = ", ".join(class_names) if class_names else "integer labels"
    raise SourceError(
        f"class folder {class_folder!r} names no class of this tenant; use one of: {known}"
    )
