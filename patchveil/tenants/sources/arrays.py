"""Read images kept as numpy arrays: a `.npy` batch or an `.npz` with images, labels, names."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from patchveil.errors import SourceError
from patchveil.tenants.sources.labeled import UNKNOWN_LABEL, LabeledImages, labeled_from

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
_NPZ_KEYS = ("images", "labels", "class_names")


def load_array_file(path: Path | str) -> LabeledImages:
    """Load uint8 [N, H, W, 3] images from `.npy` (labels unknown) or `.npz` (keys below).

    An `.npz` holds `images`, optionally `labels` (integers, one per image) and optionally
    `class_names` (a string array); labels without names get the names "0", "1", ….
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise SourceError(f"{path} is not an array file: expected a .npy or .npz file")
    if not path.is_file():
        raise SourceError(f"array file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npy":
            if not isinstance(loaded, np.ndarray):
                loaded.close()
                raise SourceError(f"{path} is an .npz archive, not a .npy array; rename it")
            images = _checked_images(path, loaded)
            labels = np.full(len(images), UNKNOWN_LABEL, np.int64)
            return labeled_from(path, images, labels, ())
        if isinstance(loaded, np.ndarray):
            raise SourceError(f"{path} is a .npy array, not an .npz archive; rename it")
        with loaded as archive:
            if "images" not in archive.files:
                raise SourceError(
                    f"{path} has no 'images' array (it has: {', '.join(archive.files) or 'none'}); "
                    f"expected keys {', '.join(_NPZ_KEYS)}"
                )
            images = _checked_images(path, archive["images"])
            labels = archive["labels"] if "labels" in archive.files else None
            names = archive["class_names"] if "class_names" in archive.files else None
    except SourceError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # allow_pickle=False turns an object array (e.g. class names as Python objects) into
        # a ValueError, which lands here too.
        raise SourceError(
            f"{path} is not a readable {suffix} file ({error}); store plain arrays, with "
            "class_names as a unicode string array"
        ) from None
    return labeled_from(path, images, *_labels_and_names(path, len(images), labels, names))


def _checked_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        hint = (
            " (channels first? transpose to [N, H, W, 3])"
            if images.ndim == 4 and images.shape[1] == 3
            else ""
        )
        raise SourceError(
            f"{path}: images must be uint8 [N, H, W, 3], got {images.dtype} "
            f"{list(images.shape)}{hint}"
        )
    return images


def _labels_and_names(
    path: Path, count: int, labels: np.ndarray | None, names: np.ndarray | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise SourceError(
            f"{path}: class_names must be a 1-D string array, got {names.dtype} {list(names.shape)}"
        )
    class_names = tuple(
        name.decode() if isinstance(name, bytes) else str(name)
        for name in (names.tolist() if names is not None else [])
    )
    if labels is None:
        return np.full(count, UNKNOWN_LABEL, np.int64), class_names
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SourceError(
            f"{path}: labels must be 1-D integers, got {labels.dtype} {list(labels.shape)}"
        )
    if names is None and labels.size:
        class_names = tuple(str(label) for label in range(int(labels.max()) + 1))
    return labels, class_names
