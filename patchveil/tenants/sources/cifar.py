"""Read CIFAR-10 and CIFAR-100 in the "python version" pickle layout, whole or partial."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.errors import SourceError
from patchveil.tenants.sources.labeled import LabeledImages, labeled_from

log = logging.getLogger(__name__)

CIFAR10_META = "batches.meta"
CIFAR100_META = "meta"
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{number}" for number in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR100_BATCHES = {"train": ("train",), "test": ("test",)}
CIFAR_SIDE = 32


@dataclass(frozen=True)
class _Layout:
    meta: str
    batches: dict[str, tuple[str, ...]]
    labels_key: str
    names_key: str


# CIFAR-10 first: a folder holding both meta files is read as CIFAR-10.
_LAYOUTS = (
    _Layout(CIFAR10_META, CIFAR10_BATCHES, "labels", "label_names"),
    _Layout(CIFAR100_META, CIFAR100_BATCHES, "fine_labels", "fine_label_names"),
)
_ROW_BYTES = 3 * CIFAR_SIDE * CIFAR_SIDE

# The only globals a CIFAR pickle needs (numpy array reconstruction, across numpy 1.x/2.x and
# pickle protocols 2–5). Anything else is refused: a pickle can otherwise run arbitrary code.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def is_cifar_dir(path: Path) -> bool:
    """True when `path` is a folder with a CIFAR-10 `batches.meta` or CIFAR-100 `meta` file."""
    return path.is_dir() and ((path / CIFAR10_META).is_file() or (path / CIFAR100_META).is_file())


def load_cifar(
    root: Path | str, split: str = "train", require_complete: bool = False
) -> LabeledImages:
    """Load the train or test split of a CIFAR-10 or CIFAR-100 "python version" folder.

    A partial copy (some batch files missing, or batches with fewer rows than the official
    count) loads what is there and logs a warning; `require_complete=True` makes that an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"CIFAR folder {root} does not exist")
    if split not in CIFAR10_BATCHES:
        raise SourceError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    layout = next((layout for layout in _LAYOUTS if (root / layout.meta).is_file()), None)
    if layout is None:
        raise SourceError(
            f"{root} is not a CIFAR folder: expected {CIFAR10_META} (CIFAR-10) or "
            f"{CIFAR100_META} (CIFAR-100) beside the batch files"
        )
    meta_name, batch_names = layout.meta, layout.batches[split]
    labels_key, names_key = layout.labels_key, layout.names_key
    meta = _read_pickle(root / meta_name)
    class_names = tuple(_text(name) for name in _field(meta, names_key, root / meta_name))
    rows_per_batch = _get(meta, "num_cases_per_batch")

    present = [name for name in batch_names if (root / name).is_file()]
    missing = [name for name in batch_names if name not in present]
    if not present:
        raise SourceError(
            f"CIFAR folder {root} has no {split} batch files: expected {', '.join(batch_names)}"
        )
    if missing:
        message = f"CIFAR folder {root} lacks {split} batch files {', '.join(missing)}"
        if require_complete:
            raise SourceError(message)
        log.warning("%s; loading the %d that are present", message, len(present))

    images, labels, short = [], [], []
    for name in present:
        batch_images, batch_labels = _read_batch(root / name, labels_key, len(class_names))
        if isinstance(rows_per_batch, int) and len(batch_labels) < rows_per_batch:
            short.append(f"{name} holds {len(batch_labels)} of {rows_per_batch} images")
        images.append(batch_images)
        labels.append(batch_labels)
    if short:
        message = f"CIFAR folder {root} is a partial copy: {'; '.join(short)}"
        if require_complete:
            raise SourceError(message)
        log.warning("%s", message)
    return labeled_from(root, np.concatenate(images), np.concatenate(labels), class_names)


def _read_batch(path: Path, labels_key: str, class_count: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    data = np.asarray(_field(batch, "data", path))
    labels = np.asarray(_field(batch, labels_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        raise SourceError(
            f"{path}: 'data' must be uint8 [N, {_ROW_BYTES}] (R, G, B planes of 32×32), "
            f"got {data.dtype} {list(data.shape)}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise SourceError(
            f"{path}: '{labels_key}' must be {data.shape[0]} integers, one per row of 'data', "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= class_count):
        raise SourceError(
            f"{path}: labels must lie in [0, {class_count}), got {labels.min()}..{labels.max()}"
        )
    # Each row is the R plane, then G, then B, each 32×32 row-major: [N, 3, H, W] → [N, H, W, 3].
    planes = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels.astype(np.int64)


def _read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as stream:
            content = _CifarUnpickler(stream, encoding="bytes").load()
    except OSError as error:
        raise SourceError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:
        # Truncated or foreign pickles fail with many exception types (EOFError,
        # UnpicklingError, ValueError, ...); every one means the same thing to the user.
        raise SourceError(
            f"{path} is not a readable CIFAR pickle ({type(error).__name__}: {error}); "
            "it may be truncated or corrupt"
        ) from None
    if not isinstance(content, dict):
        raise SourceError(f"{path} must hold a pickled dict, got {type(content).__name__}")
    return content


def _get(mapping: dict[Any, Any], key: str) -> Any:
    """Look `key` up as bytes (Python 2 pickles) or as str (pickles re-written by Python 3)."""
    if key.encode() in mapping:
        return mapping[key.encode()]
    return mapping.get(key)


def _field(mapping: dict[Any, Any], key: str, path: Path) -> Any:
    value = _get(mapping, key)
    if value is None:
        keys = ", ".join(sorted(_text(name) for name in mapping))
        raise SourceError(f"{path} has no '{key}' entry (it has: {keys})")
    return value


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
