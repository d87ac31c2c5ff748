"""Encrypted image files that carry their own decryption metadata (tenant side).

- a batch (`.npy` in) is written as one `.npz`: `images`, `tags`, `nonces` (per-image ciphers)
  and a JSON `header` (tenant, key id, key version, cipher);
- an image, or each image of a folder, is a PNG whose `patchveil` text chunk holds the header
  plus that image's nonce and tag, so a folder needs no order: a missing or extra file spoils
  nothing else.
Everything is written atomically. None of it is secret (see `encrypted_batch`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.fsutil import atomic_path
from patchveil.tenants.encrypted_batch import TAG_BYTES, CiphertextError, EncryptedBatch
from patchveil.tenants.imageio import (
    ImageBatch,
    read_images,
    read_png_metadata,
    write_images,
)

ENCRYPTED_BATCH_SUFFIX = ".npz"


@dataclass(frozen=True)
class EncryptedFiles:
    """What `read_encrypted` found: batches of images sharing one key version, in input order
    when concatenated, and the input's kind and file names (to write the plain result alike)."""

    kind: str  # "npz", "image" or "folder"
    batches: tuple[EncryptedBatch, ...]
    names: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return sum(len(batch) for batch in self.batches)


def check_distinct_paths(input_path: Path, output_path: Path) -> None:
    """Refuse an output that is the input, or lies inside it, or holds it: writing it would
    replace or mix the images being read."""
    source, target = input_path.resolve(), output_path.resolve()
    if source == target or (output_path.exists() and output_path.samefile(input_path)):
        raise PatchveilError(
            f"output {output_path} is the input; write to another path (nothing was written)"
        )
    if source in target.parents or target in source.parents:
        raise PatchveilError(
            f"output {output_path} and input {input_path} lie inside one another; write "
            "somewhere else (nothing was written)"
        )


def check_encrypted_output(source: ImageBatch, output_path: Path) -> None:
    """Refuse, before any work, an output path that cannot carry the ciphertext's metadata."""
    suffix = output_path.suffix.lower()
    if source.kind == "npy" and suffix != ENCRYPTED_BATCH_SUFFIX:
        raise PatchveilError(
            f"encrypted batches are written as {ENCRYPTED_BATCH_SUFFIX} (images + key version + "
            f"nonces + integrity tags), not {output_path.name}: name the output "
            f"{output_path.with_suffix('.npz').name}"
        )
    if source.kind == "image" and suffix != ".png":
        raise PatchveilError(
            f"an encrypted image is written as lossless PNG (its key version and nonce in a text "
            f"chunk), not {output_path.name}: name the output {output_path.with_suffix('.png').name}"
        )


def write_encrypted(path: Path, source: ImageBatch, batch: EncryptedBatch) -> None:
    """Write `batch` in the kind `source` came in (see the module docstring), atomically."""
    check_encrypted_output(source, path)
    if source.kind == "npy":
        arrays: dict[str, np.ndarray] = {
            "images": batch.images,
            "tags": batch.tags,
            "header": np.array(json.dumps(batch.header(), sort_keys=True)),
        }
        if batch.nonces is not None:
            arrays["nonces"] = batch.nonces.astype(np.int64)
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
        return
    metadata = [batch.image_metadata(index) for index in range(len(batch))]
    write_images(path, source, batch.images, metadata)


def read_encrypted(path: Path) -> EncryptedFiles:
    """Read what `write_encrypted` wrote; refuse input without readable metadata."""
    if not path.exists():
        raise PatchveilError(f"input {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".npy":
        raise CiphertextError(
            f"{path} is a bare .npy batch: it carries no key version or nonces. Decrypt the "
            f"{ENCRYPTED_BATCH_SUFFIX} file that `patchveil encrypt` wrote"
        )
    if path.is_file() and path.suffix.lower() == ENCRYPTED_BATCH_SUFFIX:
        return EncryptedFiles("npz", (_read_npz(path),))
    plain = read_images(path)  # shapes and formats checked as for any image input
    files = [path] if plain.kind == "image" else [path / name for name in plain.names]
    headers = [_png_header(file) for file in files]
    batches = []
    start = 0
    # Consecutive files sharing one key version form one batch (one cipher, one tag check).
    while start < len(files):
        shared = _shared(headers[start])
        end = start + 1
        while end < len(files) and _shared(headers[end]) == shared:
            end += 1
        batches.append(_png_batch(headers[start:end], plain.images[start:end], files[start]))
        start = end
    return EncryptedFiles(plain.kind, tuple(batches), plain.names)


def write_decrypted(path: Path, encrypted: EncryptedFiles, images: np.ndarray) -> None:
    """Write plain images in the kind the ciphertext came in (`.npz` → `.npy`), atomically."""
    if encrypted.kind == "npz":
        if path.suffix.lower() != ".npy":
            raise PatchveilError(
                f"the plain images of a .npz batch are written as .npy: name the output "
                f"{path.with_suffix('.npy').name}"
            )
        write_images(path, ImageBatch(images, "npy"), images)
        return
    write_images(path, ImageBatch(images, encrypted.kind, encrypted.names), images)


def _read_npz(path: Path) -> EncryptedBatch:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(str(arrays["header"]))
        images, tags = arrays["images"], arrays["tags"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CiphertextError(
            f"{path} is not a patchveil ciphertext batch ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(header, dict):
        raise CiphertextError(f"{path} has no readable header")
    return EncryptedBatch.from_header(header, images, tags, arrays.get("nonces"), str(path))


def _png_header(file: Path) -> dict[str, Any]:
    metadata = read_png_metadata(file)
    if metadata is None:
        raise CiphertextError(
            f"{file} carries no patchveil metadata (key version, nonce, tag): it was not written "
            "by `patchveil encrypt`, or a tool stripped its PNG text chunk"
        )
    return metadata


def _shared(header: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(header.get(name) for name in ("tenant_id", "key_id", "key_version", "cipher"))


def _png_batch(
    headers: Sequence[dict[str, Any]], images: np.ndarray, first_file: Path
) -> EncryptedBatch:
    try:
        tags = np.stack([np.frombuffer(bytes.fromhex(h["tag"]), dtype=np.uint8) for h in headers])
        nonce_values = [h["nonce"] for h in headers]
        if tags.shape[1] != TAG_BYTES:
            raise ValueError("tag length")
        if all(nonce is None for nonce in nonce_values):
            nonces = None
        else:
            nonces = np.array([int(nonce) for nonce in nonce_values], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CiphertextError(
            f"{first_file}: its patchveil metadata (nonce, tag) is damaged"
        ) from None
    return EncryptedBatch.from_header(dict(headers[0]), images, tags, nonces, str(first_file))
