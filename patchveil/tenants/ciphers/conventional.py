"""`conventional`: block scrambling, pixel shuffling, negative–positive and colour shuffling
at full strength, one setting per key for every block (the Kiya-lab ViT scheme)."""

from __future__ import annotations

import numpy as np

from patchveil.tenants.ciphers.base import (
    Cipher,
    log2_factorial,
    register_cipher,
)
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    GatherMask,
    block_index,
    channel_orders,
    compose,
)
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystream import bits, permutation


@register_cipher("conventional")
class ConventionalCipher(Cipher):
    summary = "BS + PS + NP + CS at full strength, one setting per key"

    """Encrypted block j, element e = plain block `block_order[j]`, element `element_order[e]`,
    negated where `flip[e]`; the same `element_order` and `flip` for every block."""

    block_order: np.ndarray
    element_order: np.ndarray
    flip: np.ndarray

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        blocks = block_index(spec.image_size, spec.block_size)
        count, length = blocks.shape
        block_order = permutation(key.keystream("conventional/block-scramble"), count)
        pixel_order = permutation(key.keystream("conventional/pixel-shuffle"), length)
        flip = bits(key.keystream("conventional/negative-positive"), length)
        colour = ALL_CHANNEL_PERMUTATIONS[
            key.keystream("conventional/colour-shuffle").below(len(ALL_CHANNEL_PERMUTATIONS))
        ]
        # Colour shuffle first, then pixel shuffle: element e of the output takes input
        # element colour_order[pixel_order[e]].
        colour_order = channel_orders(spec.block_size, colour[None])[0]
        self.block_order = block_order
        self.element_order = colour_order[pixel_order]
        self.flip = flip
        for array in (self.block_order, self.element_order, self.flip):
            array.setflags(write=False)
        return GatherMask(*compose(blocks, block_order, self.element_order, flip))

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        count = spec.blocks_per_side**2
        length = 3 * spec.block_size**2
        # Colour shuffling composed with a full pixel shuffle is again a pixel shuffle, so it
        # adds no distinct transforms.
        return log2_factorial(count) + log2_factorial(length) + length
