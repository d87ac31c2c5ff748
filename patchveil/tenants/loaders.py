"""The one way to load plain labelled images: `load_source(path)` detects the layout.

Layouts: CIFAR-10/100 "python version" folders, Tiny ImageNet 200, `.npy`/`.npz` arrays and
`root/<class_name>/<file>` image folders. Plain images stay on the tenant's side of the trust
boundary; only their encryptions leave it.
"""

from __future__ import annotations

import os
from pathlib import Path

from patchveil.errors import SourceError
from patchveil.tenants.sources.arrays import ARRAY_SUFFIXES, load_array_file
from patchveil.tenants.sources.cifar import is_cifar_dir, load_cifar
from patchveil.tenants.sources.folders import (
    is_image_folder,
    is_tiny_imagenet_dir,
    load_image_folder,
    load_tiny_imagenet,
)
from patchveil.tenants.sources.labeled import UNKNOWN_LABEL, LabeledImages

__all__ = [
    "CIFAR_DIR_ENV",
    "UNKNOWN_LABEL",
    "LabeledImages",
    "default_cifar_dir",
    "describe_layouts",
    "load_array_file",
    "load_cifar",
    "load_image_folder",
    "load_source",
    "load_tiny_imagenet",
]

CIFAR_DIR_ENV = "PATCHVEIL_CIFAR_DIR"
SPLITS = ("train", "test")
# Folder names the official archives unpack to; a path to their parent is accepted too.
_CIFAR_SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")
# What `patchveil data split` writes into each tenant's folder.
SPLIT_FILE = "images.npz"
_LAYOUTS = (
    "a CIFAR-10/100 python-version folder (batches.meta or meta), a Tiny ImageNet folder "
    "(wnids.txt), a .npy/.npz file, a tenant folder written by `patchveil data split` "
    f"({SPLIT_FILE}), or an image folder root/<class_name>/<image file>"
)


def load_source(path: Path | str, split: str = "train") -> LabeledImages:
    """Load plain labelled images from any supported layout, detected from `path`.

    `split` ("train" or "test") picks the split of layouts that hold both; Tiny ImageNet's
    labelled "val" split serves as its test split. Array files and image folders hold one set
    of images and ignore `split`.
    """
    path = Path(path)
    if split not in SPLITS:
        raise SourceError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not path.exists():
        raise SourceError(f"source {path} does not exist; expected {_LAYOUTS}")
    if path.is_file():
        if path.suffix.lower() in ARRAY_SUFFIXES:
            return load_array_file(path)
        raise SourceError(f"source {path} is a file of unknown kind; expected {_LAYOUTS}")
    for candidate in (path, *(path / name for name in _CIFAR_SUBFOLDERS)):
        if is_cifar_dir(candidate):
            return load_cifar(candidate, split)
    if is_tiny_imagenet_dir(path):
        return load_tiny_imagenet(path, "train" if split == "train" else "val")
    if is_image_folder(path):
        return load_image_folder(path)
    if (path / SPLIT_FILE).is_file():
        return load_array_file(path / SPLIT_FILE)
    raise SourceError(f"source {path} matches no known layout; expected {_LAYOUTS}")


def describe_layouts() -> str:
    """The source layouts `load_source` accepts, in words (for error messages)."""
    return _LAYOUTS


def default_cifar_dir() -> Path | None:
    """The CIFAR-10 folder to use by default: $PATCHVEIL_CIFAR_DIR, else the shared subset.

    The shared subset lives at `<repo>/../shared/data/cifar-10-subset-py`; None if neither exists.
    """
    configured = os.environ.get(CIFAR_DIR_ENV)
    if configured:
        return Path(configured) if Path(configured).is_dir() else None
    repo = Path(__file__).resolve().parents[2]
    shared = (repo / ".." / "shared" / "data" / "cifar-10-subset-py").resolve()
    return shared if shared.is_dir() else None
