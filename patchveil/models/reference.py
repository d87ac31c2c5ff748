"""Reference embeddings: a fixed sample of the model's embeddings of tenants' ciphertexts, saved
beside the weights. The clone defence fits its locality-sensitive hash to them and the monitor
measures out-of-distribution queries against them.

Platform side: the sample is read from a published dataset version (ciphertext only); the file
holds float embeddings, never an image or a key. Held-out (validation) rows are preferred: a
query from the same distribution is then as far from the reference as reference points are from
each other, which is what the monitor's out-of-distribution radius assumes. Rows the model was
trained on sit closer to each other than any new image does to them.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from patchveil.datasets import storage
from patchveil.models.inference import predict_with_embeddings

REFERENCE_FILE = "reference_embeddings.npy"
REFERENCE_COUNT = 1024


def sample_rows(total: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `count` of `total` rows, the same for the same seed."""
    if total <= count:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def compute_reference_embeddings(
    model: torch.nn.Module,
    ciphertexts: np.ndarray,
    device: torch.device | None = None,
    unpack_nibbles: bool = False,
) -> np.ndarray:
    """[M, D] float32 embeddings of ciphertexts [M, H, W, C] (the model's pre-logits)."""
    _, embeddings = predict_with_embeddings(
        model, ciphertexts, device or torch.device("cpu"), unpack_nibbles=unpack_nibbles
    )
    return embeddings.numpy().astype(np.float32)


def save_reference_embeddings(checkpoint_uri: str, embeddings: np.ndarray) -> str:
    """Store [M, D] reference embeddings beside a checkpoint's weights (no image, no key)."""
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"reference embeddings must be [M ≥ 2, D], got shape {array.shape}")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    uri = storage.join_uri(storage.normalize_uri(checkpoint_uri), REFERENCE_FILE)
    storage.write_bytes_atomic(uri, buffer.getvalue())
    return uri


def load_reference_embeddings(checkpoint_uri: str) -> np.ndarray | None:
    """The checkpoint's reference embeddings, or None for a checkpoint saved without them."""
    uri = storage.join_uri(storage.normalize_uri(checkpoint_uri), REFERENCE_FILE)
    if not storage.exists(uri):
        return None
    return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
