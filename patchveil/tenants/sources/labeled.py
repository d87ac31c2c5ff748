"""`LabeledImages`: plain uint8 images [N, H, W, 3] with int64 labels and class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchveil.errors import ImageFormatError, SourceError

UNKNOWN_LABEL = -1


@dataclass(frozen=True)
class LabeledImages:
    """A labelled set of plain images; label -1 means unknown, other labels index class_names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
            raise ImageFormatError(
                f"images and labels must be numpy arrays, got {type(images).__name__} "
                f"and {type(labels).__name__}"
            )
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ImageFormatError(
                f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ImageFormatError(
                f"labels must be one integer per image, shape [{images.shape[0]}], "
                f"got {list(labels.shape)}"
            )
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ImageFormatError(f"labels must be integers, got {labels.dtype}")
        names = tuple(str(name) for name in self.class_names)
        if labels.size and (labels.min() < UNKNOWN_LABEL or labels.max() >= len(names)):
            raise ImageFormatError(
                f"labels must lie in [0, {len(names)}) for {len(names)} class names "
                f"(or be {UNKNOWN_LABEL} for unknown), got {labels.min()}..{labels.max()}"
            )
        # Lossless normalisation only: C order for the ciphers, int64 labels, a tuple of str.
        object.__setattr__(self, "images", np.ascontiguousarray(images))
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"LabeledImages(n={len(self)}, shape={list(self.images.shape[1:])}, "
            f"classes={len(self.class_names)})"
        )

    @property
    def image_size(self) -> int:
        """Side length of the (square) images; an error for non-square images."""
        height, width = self.images.shape[1:3]
        if height != width:
            raise ImageFormatError(
                f"images are {height}×{width}, not square; resize or crop them to a square size"
            )
        return int(height)

    @property
    def has_labels(self) -> bool:
        """True when every image has a known label."""
        return bool(len(self.class_names)) and not np.any(self.labels == UNKNOWN_LABEL)

    def class_counts(self) -> np.ndarray:
        """Number of images per class, aligned with class_names (unknown labels not counted)."""
        known = self.labels[self.labels != UNKNOWN_LABEL]
        return np.bincount(known, minlength=len(self.class_names)).astype(np.int64)

    def subset(self, indices: np.ndarray | list[int]) -> LabeledImages:
        """The images at `indices` (integer positions or a boolean mask), as a new copy."""
        chosen = np.asarray(indices)
        if chosen.dtype != np.bool_:
            chosen = chosen.astype(np.int64, copy=False)
        return LabeledImages(self.images[chosen], self.labels[chosen], self.class_names)


def labeled_from(
    source: Path, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> LabeledImages:
    """Build `LabeledImages`, turning a validation failure into an error that names `source`."""
    try:
        return LabeledImages(images, labels, class_names)
    except ImageFormatError as error:
        raise SourceError(f"{source}: {error}") from None
