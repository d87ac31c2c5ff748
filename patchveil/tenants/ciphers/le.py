"""`le`: learnable encryption (Tanaka 2018): each byte is split into two 4-bit values, and
within every block the 6·M² values are shuffled and some inverted (v → 15 − v), the same way
for every block. The shuffled 4-bit values are packed back two per byte, so the ciphertext keeps
the uint8 [N, H, W, 3] shape; a model unpacks them into 6 channels without any key."""

from __future__ import annotations

import numpy as np

from patchveil.tenants.ciphers.base import Cipher, log2_factorial, register_cipher
from patchveil.tenants.ciphers.hazmat import (
    GatherMask,
    block_index,
    compose,
    join_nibbles,
    split_nibbles,
)
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystream import bits, permutation


@register_cipher("le")
class LearnableEncryptionCipher(Cipher):
    summary = "LE: 4-bit split, in-block shuffle and inversion (Tanaka 2018)"
    input_layout = "nibbles"

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        blocks = block_index(spec.image_size, spec.block_size, channels=6)
        count, length = blocks.shape
        element_order = permutation(key.keystream("le/shuffle"), length)
        flip = bits(key.keystream("le/negative-positive"), length)
        return GatherMask(*compose(blocks, np.arange(count), element_order, flip, flip_value=0x0F))

    # Split nibbles and their shuffled copy: two arrays twice the size of the chunk.
    working_copies = 4

    def transform(
        self, table: GatherMask, flat: np.ndarray, out: np.ndarray, device: str | None = None
    ) -> None:
        nibbles = split_nibbles(flat)
        join_nibbles(table.apply(nibbles, out=np.empty_like(nibbles), device=device), out=out)

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        length = 6 * spec.block_size**2
        return log2_factorial(length) + length
