"""Read image files laid out in folders: `root/<class>/<file>` and Tiny ImageNet 200."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from patchveil.errors import SourceError
from patchveil.tenants.sources.labeled import LabeledImages, labeled_from

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
TINY_IMAGENET_WNIDS = "wnids.txt"
TINY_IMAGENET_WORDS = "words.txt"
_DECODE_THREADS = min(8, os.cpu_count() or 1)


def load_image_folder(root: Path | str) -> LabeledImages:
    """Load `root/<class_name>/**/<file>` images; classes are the sorted sub-folder names."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image folder {root} does not exist")
    class_dirs = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = image_files(class_dir)
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise SourceError(
            f"image folder {root} holds no images: expected root/<class_name>/<file> with "
            f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return labeled_from(
        root,
        decode_images(files),
        np.asarray(labels, dtype=np.int64),
        tuple(class_dir.name for class_dir in class_dirs),
    )


def is_tiny_imagenet_dir(path: Path) -> bool:
    """True when `path` is a folder holding Tiny ImageNet's `wnids.txt`."""
    return path.is_dir() and (path / TINY_IMAGENET_WNIDS).is_file()


def load_tiny_imagenet(root: Path | str, split: str = "train") -> LabeledImages:
    """Load Tiny ImageNet 200's labelled `train` or `val` split (64×64 RGB, 200 classes).

    Labels index the sorted WordNet ids; class names are the first synonym in `words.txt`
    (the WordNet id itself where `words.txt` is absent).
    """
    root = Path(root)
    if not is_tiny_imagenet_dir(root):
        raise SourceError(
            f"{root} is not a Tiny ImageNet folder: expected {TINY_IMAGENET_WNIDS}, "
            f"{TINY_IMAGENET_WORDS}, train/<wnid>/images/ and val/val_annotations.txt"
        )
    wnids = sorted(
        {line.strip() for line in _read_lines(root / TINY_IMAGENET_WNIDS) if line.strip()}
    )
    if not wnids:
        raise SourceError(f"{root / TINY_IMAGENET_WNIDS} lists no WordNet ids")
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    if split == "train":
        files, labels = [], []
        for wnid in wnids:
            found = image_files(root / "train" / wnid / "images")
            if not found:
                raise SourceError(
                    f"Tiny ImageNet class folder {root / 'train' / wnid / 'images'} holds no images"
                )
            files.extend(found)
            labels.extend([label_of[wnid]] * len(found))
    elif split == "val":
        files, labels = _val_annotations(root, label_of)
    else:
        raise SourceError(
            f"Tiny ImageNet split must be 'train' or 'val' (test labels are not public), "
            f"got {split!r}"
        )
    return labeled_from(
        root, decode_images(files), np.asarray(labels, dtype=np.int64), _class_names(root, wnids)
    )


def _val_annotations(root: Path, label_of: dict[str, int]) -> tuple[list[Path], list[int]]:
    annotations = root / "val" / "val_annotations.txt"
    files, labels = [], []
    for number, line in enumerate(_read_lines(annotations), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in label_of:
            raise SourceError(
                f"{annotations} line {number}: expected '<file>\\t<wnid listed in wnids.txt>\\t…',"
                f" got {line.strip()!r}"
            )
        files.append(root / "val" / "images" / fields[0])
        labels.append(label_of[fields[1]])
    if not files:
        raise SourceError(f"{annotations} lists no validation images")
    return files, labels


def _class_names(root: Path, wnids: Sequence[str]) -> tuple[str, ...]:
    words: dict[str, str] = {}
    if (root / TINY_IMAGENET_WORDS).is_file():
        for line in _read_lines(root / TINY_IMAGENET_WORDS):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(wnid) or wnid for wnid in wnids]
    # Two WordNet ids can share a first synonym; keep names unique by adding the id.
    return tuple(
        f"{name} ({wnid})" if names.count(name) > 1 else name
        for name, wnid in zip(names, wnids, strict=True)
    )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path} is not UTF-8 text") from None


def is_image_folder(path: Path) -> bool:
    """True when some non-hidden sub-folder of `path` holds at least one image file."""
    return path.is_dir() and any(
        entry.is_dir() and not entry.name.startswith(".") and _has_image(entry)
        for entry in path.iterdir()
    )


def _has_image(folder: Path) -> bool:
    return any(
        path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() for path in folder.rglob("*")
    )


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, hidden entries skipped), in sorted path order."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def decode_images(files: Sequence[Path]) -> np.ndarray:
    """Decode image files to one uint8 [N, H, W, 3] RGB array; all must have the first's size."""
    if not files:
        raise SourceError("no image files to decode")
    first = read_image(files[0])
    height, width = first.shape[:2]
    out = np.empty((len(files), height, width, 3), dtype=np.uint8)
    out[0] = first
    # Pillow releases the GIL while decoding, so threads give real parallelism here; map()
    # yields in order, so a size error names the first offending file in path order.
    pool = ThreadPoolExecutor(max_workers=_DECODE_THREADS)
    try:
        decoded = pool.map(lambda path: read_image(path, (width, height)), files[1:])
        for index, image in enumerate(decoded, start=1):
            out[index] = image
    finally:
        # On an error, drop the decodes not yet started instead of finishing all of them.
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def read_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image file as uint8 RGB [H, W, 3]; `expected_size` is (width, height)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if expected_size is not None and image.size != expected_size:
                raise SourceError(
                    f"{path} is {image.size[0]}×{image.size[1]} (width×height) but the images "
                    f"before it are {expected_size[0]}×{expected_size[1]}; all images of one "
                    "source must have one size"
                )
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except SourceError:
        raise
    except FileNotFoundError:
        raise SourceError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise SourceError(f"{path} is not a readable image ({error})") from None
