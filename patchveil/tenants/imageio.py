"""Read and write the tenant's image files: `.npy` batches, one image file, or a folder of images.

Ciphertext must be stored losslessly, so images are written as PNG (or `.npy`); a lossy format
would destroy the exact decryption.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.errors import ImageFormatError, PatchveilError
from patchveil.fsutil import atomic_path
from patchveil.tenants.sources.folders import IMAGE_SUFFIXES, read_image

LOSSLESS_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm"}
# The PNG text chunk where an encrypted image keeps its key id, version, nonce and tag.
PNG_METADATA_KEY = "patchveil"


@dataclass(frozen=True)
class ImageBatch:
    """Images [N, H, W, 3] uint8 and where they came from."""

    images: np.ndarray
    kind: str  # "npy", "image" or "folder"
    names: tuple[str, ...] = ()


def read_images(path: Path | str) -> ImageBatch:
    path = Path(path)
    if not path.exists():
        raise PatchveilError(f"input {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageFormatError(f"folder {path} holds no image files ({_suffix_list()})")
        images = [read_image(p) for p in files]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise ImageFormatError(f"images in {path} have different sizes: {sorted(shapes)}")
        return ImageBatch(np.stack(images), "folder", tuple(p.name for p in files))
    if path.suffix.lower() == ".npy":
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ImageFormatError(f"{path} is not a readable .npy file ({error})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ImageFormatError(
                f"{path} must hold uint8 images [N, H, W, 3], got {images.dtype} {list(images.shape)}"
            )
        return ImageBatch(images, "npy")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageBatch(read_image(path)[None], "image", (path.name,))
    raise ImageFormatError(
        f"cannot read {path}: expected a .npy file, an image file ({_suffix_list()}) or a folder"
    )


def write_images(
    path: Path | str,
    batch: ImageBatch,
    images: np.ndarray,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write `images` in the same kind as `batch` came in, atomically (never half a result).

    `metadata` (one JSON-able mapping per image) is stored in each PNG's text chunk; `.npy`
    output carries none (ciphertext batches are written by `write_encrypted` instead).
    """
    path = Path(path)
    if batch.kind == "npy":
        if path.suffix.lower() != ".npy":
            raise PatchveilError(f"output {path} must end in .npy, like the input")
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            np.save(stream, images)
        return
    if batch.kind == "image":
        if path.suffix.lower() not in LOSSLESS_SUFFIXES:
            raise PatchveilError(
                f"output {path} must be a lossless image (.png): a lossy format breaks decryption"
            )
        write_png(path, images[0], None if metadata is None else metadata[0])
        return
    if path.exists() and any(path.iterdir()):
        raise PatchveilError(f"output folder {path} exists and is not empty")
    # Every output is a PNG named after its input; two inputs sharing a stem (a.jpg, a.png)
    # would silently become one file.
    outputs = [Path(name).stem + ".png" for name in batch.names]
    clashes = sorted(name for name in set(outputs) if outputs.count(name) > 1)
    if clashes:
        sources = sorted(
            name for name, out in zip(batch.names, outputs, strict=True) if out in clashes
        )
        raise ImageFormatError(
            f"input images {', '.join(sources)} would all be written as {', '.join(clashes)}; "
            "rename them so that no two share a name before the suffix"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for index, (output, image) in enumerate(zip(outputs, images, strict=True)):
            write_png(staging / output, image, None if metadata is None else metadata[index])
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_png(
    path: Path | str, image: np.ndarray, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write one uint8 [H, W, 3] image as PNG, atomically; `metadata` goes in a text chunk."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = None
    if metadata is not None:
        info = PngInfo()
        info.add_text(PNG_METADATA_KEY, json.dumps(dict(metadata), sort_keys=True))
    with atomic_path(path) as temporary:
        Image.fromarray(np.ascontiguousarray(image)).save(temporary, format="PNG", pnginfo=info)


def read_png_metadata(path: Path) -> dict[str, Any] | None:
    """The JSON of a PNG's patchveil text chunk, or None when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_METADATA_KEY)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageFormatError(f"{path} is not a readable image ({error})") from None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _suffix_list() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))
