"""Handwritten digits offline: scikit-learn's UCI digits, or MNIST from IDX files a user has."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchveil.errors import PatchveilError

# IDX type codes (the third byte of the magic number) and the numpy dtypes they name.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DigitsError(PatchveilError):
    """A digits data set cannot be read."""


@dataclass(frozen=True)
class DigitsSplit:
    """Images `[N, H, W, 1]` as float64 scaled to [0, 1], and their labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_uci_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[DigitsSplit, DigitsSplit]:
    """The 1,797 8×8 UCI digits (bundled with scikit-learn: nothing downloads), split into train
    and test stratified by label with a fixed seed, so every run tests the same images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images[..., None] / 16.0  # pixel values are 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    return DigitsSplit(train_x, train_y), DigitsSplit(test_x, test_y)


def read_idx(path: Path | str) -> np.ndarray:
    """One IDX file (the MNIST format), plain or gzipped."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise DigitsError(f"cannot read IDX file {path}: {error.strerror or error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DigitsError(f"{path} is not an IDX file (magic 0x0000 + type code + dimensions)")
    dimensions = data[3]
    header = 4 + 4 * dimensions
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    if len(data) != header + int(np.prod(shape)) * dtype.itemsize:
        raise DigitsError(f"{path}: the header says shape {shape}, the file has another length")
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def load_mnist(folder: Path | str, split: str = "test") -> DigitsSplit:
    """MNIST from the four official IDX files in `folder` (`.gz` or not)."""
    if split not in _MNIST_FILES:
        raise DigitsError(f"MNIST split {split!r} does not exist; use 'train' or 'test'")
    paths = []
    for stem in _MNIST_FILES[split]:
        found = [
            Path(folder) / name for name in (stem, f"{stem}.gz") if (Path(folder) / name).exists()
        ]
        if not found:
            raise DigitsError(f"{folder} has no {stem} (or {stem}.gz); download MNIST there first")
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.shape != (len(images),):
        raise DigitsError(f"{folder}: {len(labels)} labels for images of shape {images.shape}")
    return DigitsSplit(images[..., None] / 255.0, labels.astype(np.int64))
