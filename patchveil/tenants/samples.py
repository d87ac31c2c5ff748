"""Sample ids and the per-image nonces they stand for (tenant side: nonces drive its ciphers).

Sample ids are `"<tenant_id>:<index>"`, where `index` is the tenant-local image index handed out
by the platform registry; the same integer is the nonce of per-image ciphers, so the tenant can
decrypt any row from its sample id alone. Augmented variants of a training image are
`"<tenant_id>:<index>:aug<k>"` with nonce `index + k * AUGMENT_NONCE_STRIDE`. Query nonces are
random and at least `QUERY_NONCE_BASE`, so they never meet an image's.
"""

from __future__ import annotations

import re
import secrets

import numpy as np

from patchveil.datasets.schema import AUGMENTED_SUFFIX
from patchveil.errors import PatchveilError

# Nonces of augmented variants live far above every real image index.
AUGMENT_NONCE_STRIDE = 10**9
# Query nonces are random and at least 2**62, so they never meet an image index.
QUERY_NONCE_BASE = 2**62
_SAMPLE_ID = re.compile(r"^(?P<tenant>[^:]+):(?P<index>\d+)(?::aug(?P<variant>\d+))?$")


def sample_id(tenant_id: str, index: int, variant: int = 0) -> str:
    """`<tenant>:<index>` for an image, `<tenant>:<index>:aug<k>` for its k-th augmented variant."""
    return (
        f"{tenant_id}:{index}"
        if variant == 0
        else f"{tenant_id}:{index}{AUGMENTED_SUFFIX}{variant}"
    )


def nonce_of(tenant_id: str, sample: str) -> int:
    """The per-image nonce a sample id stands for; an error for another tenant's sample."""
    match = _SAMPLE_ID.match(sample)
    if match is None or match.group("tenant") != tenant_id:
        raise PatchveilError(
            f"sample id {sample!r} is not one of tenant {tenant_id!r}'s: expected "
            f"'{tenant_id}:<index>' or '{tenant_id}:<index>:aug<k>'"
        )
    variant = int(match.group("variant") or 0)
    return int(match.group("index")) + variant * AUGMENT_NONCE_STRIDE


def query_nonces(count: int) -> np.ndarray:
    """Fresh random nonces for `count` query images, above every image and variant nonce."""
    return np.array([QUERY_NONCE_BASE + secrets.randbits(62) for _ in range(count)], dtype=np.int64)
