"""The tenant's FedKL key vector, derived from its secret through the key store's keystream.

Tenant side: the vector is as secret as the key (whoever holds it and the lock's weights unlocks
the tenant's updates), so it lives only in the tenant's actor and is never logged or returned.
"""

from __future__ import annotations

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.tenants.keys import Key

# Domain separation: the lock's randomness never coincides with any cipher's permutations.
KEY_LOCK_LABEL = "patchveil/federated/key-lock/v1"
_MAX_KEY_DIM = 4096


def key_vector(key: Key, key_dim: int) -> np.ndarray:
    """`key_dim` float32 values, uniform in [-1, 1), from the key's keystream.

    Deterministic in (secret, key_dim's prefix): a restarted actor derives the same vector.
    """
    if not 1 <= key_dim <= _MAX_KEY_DIM:
        raise PatchveilError(f"a key vector has 1 to {_MAX_KEY_DIM} values, got {key_dim}")
    raw = np.frombuffer(key.keystream(KEY_LOCK_LABEL).read(4 * key_dim), dtype="<u4")
    # 24 high bits → exactly representable float32 in [0, 1), then centred.
    unit = (raw >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)
    return unit * np.float32(2) - np.float32(1)


LOCK_INIT_LABEL = "patchveil/federated/lock-init/v1"


def lock_seed(key: Key) -> int:
    """A seed for the lock layers' first weights, from the key: the platform, which builds the
    same architecture, cannot know the tenant's starting lock either."""
    return int.from_bytes(key.keystream(LOCK_INIT_LABEL).read(8), "big") >> 1
