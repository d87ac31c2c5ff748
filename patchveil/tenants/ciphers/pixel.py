"""`pixel` (Sirichotedumrong, Kinoshita, Kiya 2019): per-pixel negative–positive of each colour
value and a per-pixel colour shuffle, keyed by pixel position; no block structure."""

from __future__ import annotations

import math

import numpy as np

from patchveil.tenants.ciphers.base import Cipher, register_cipher
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    GatherMask,
    block_index,
    channel_orders,
    compose,
)
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystream import bits, choices


@register_cipher("pixel")
class PixelCipher(Cipher):
    summary = "per-pixel NP and colour shuffle (Sirichotedumrong 2019)"

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        pixels = block_index(spec.image_size, 1)  # one "block" per pixel: (H·W, 3)
        count = pixels.shape[0]
        colour = channel_orders(1, ALL_CHANNEL_PERMUTATIONS)[
            choices(key.keystream("pixel/colour-shuffle"), count, len(ALL_CHANNEL_PERMUTATIONS))
        ]
        flip = bits(key.keystream("pixel/negative-positive"), count * 3).reshape(count, 3)
        return GatherMask(*compose(pixels, np.arange(count), colour, flip))

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        return spec.image_size**2 * (3 + math.log2(6))
