"""`etc`: Encryption-then-Compression (Kurihara, Kiya): block scrambling, then per block a
rotation/flip, a negative–positive and a colour shuffle, each chosen per block position."""

from __future__ import annotations

import math

import numpy as np

from patchveil.tenants.ciphers.base import Cipher, log2_factorial, register_cipher
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    GatherMask,
    block_index,
    channel_orders,
    compose,
    dihedral_orders,
)
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystream import bits, choices, permutation


@register_cipher("etc")
class EtcCipher(Cipher):
    summary = "EtC: BS, per-block rotation/flip, NP and CS"

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        blocks = block_index(spec.image_size, spec.block_size)
        count, length = blocks.shape
        block_order = permutation(key.keystream("etc/block-scramble"), count)
        geometry = dihedral_orders(spec.block_size)[
            choices(key.keystream("etc/rotate-flip"), count, 8)
        ]
        colour = channel_orders(spec.block_size, ALL_CHANNEL_PERMUTATIONS)[
            choices(key.keystream("etc/colour-shuffle"), count, len(ALL_CHANNEL_PERMUTATIONS))
        ]
        # Per block: colour shuffle, then rotation/flip (both only move elements).
        element_order = np.take_along_axis(colour, geometry, axis=1)
        negate = bits(key.keystream("etc/negative-positive"), count)
        flip = np.repeat(negate[:, None], length, axis=1)
        return GatherMask(*compose(blocks, block_order, element_order, flip))

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        count = spec.blocks_per_side**2
        return log2_factorial(count) + count * (math.log2(8) + 1 + math.log2(6))
