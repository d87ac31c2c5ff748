"""`plain`: the identity, for baselines that train on unencrypted images."""

from __future__ import annotations

import numpy as np

from patchveil.tenants.ciphers.base import Cipher, register_cipher
from patchveil.tenants.ciphers.hazmat import GatherMask
from patchveil.tenants.keys import CipherSpec, Key


@register_cipher("plain")
class PlainCipher(Cipher):
    summary = "identity (baseline, no protection)"

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        size = spec.image_size * spec.image_size * 3
        return GatherMask(np.arange(size, dtype=np.int64), np.zeros(size, dtype=np.uint8))

    def transform(
        self, table: GatherMask, flat: np.ndarray, out: np.ndarray, device: str | None = None
    ) -> None:
        np.copyto(out, flat)

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        return 0.0
