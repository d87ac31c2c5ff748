"""`restricted`: block scrambling, pixel shuffling and negative–positive, each acting on only a
key-chosen fraction of positions, so images under independent keys keep a shared structure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from patchveil.tenants.ciphers.base import (
    Cipher,
    log2_arrangements,
    log2_binomial,
    log2_factorial,
    register_cipher,
)
from patchveil.tenants.ciphers.hazmat import GatherMask, block_index, compose
from patchveil.tenants.keys import CipherSpec, Key, ParamValue
from patchveil.tenants.keystream import partial_permutation, permutation, subset


def restricted_tables(
    key: Key, spec: CipherSpec, full_block_scramble: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block order, element order and flip mask for the restricted family."""
    params = spec.param_dict
    blocks = block_index(spec.image_size, spec.block_size)
    count, length = blocks.shape
    label = spec.name
    if full_block_scramble:
        block_order = permutation(key.keystream(f"{label}/block-scramble"), count)
    else:
        block_order = partial_permutation(
            key.keystream(f"{label}/block-scramble"), count, float(params["block_fraction"])
        )
    element_order = partial_permutation(
        key.keystream(f"{label}/pixel-shuffle"), length, float(params["pixel_fraction"])
    )
    flipped = subset(
        key.keystream(f"{label}/negative-positive"),
        length,
        round(float(params["flip_fraction"]) * length),
    )
    flip = np.zeros(length, dtype=bool)
    flip[flipped] = True
    return block_order, element_order, flip


def restricted_in_block_bits(spec: CipherSpec) -> float:
    params = spec.param_dict
    length = 3 * spec.block_size**2
    moved = round(float(params["pixel_fraction"]) * length)
    flipped = round(float(params["flip_fraction"]) * length)
    # Upper bound: a chosen subset and an arrangement of it (some arrangements fix points).
    return log2_arrangements(length, moved) + log2_binomial(length, flipped)


@register_cipher("restricted")
class RestrictedCipher(Cipher):
    summary = "BS, PS, NP each on a key-chosen fraction of positions"

    defaults: ClassVar[Mapping[str, ParamValue]] = {
        "block_fraction": 0.4,
        "pixel_fraction": 0.35,
        "flip_fraction": 0.35,
    }

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        block_order, element_order, flip = restricted_tables(key, spec, full_block_scramble=False)
        return GatherMask(
            *compose(
                block_index(spec.image_size, spec.block_size), block_order, element_order, flip
            )
        )

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        count = spec.blocks_per_side**2
        moved = round(float(spec.param_dict["block_fraction"]) * count)
        return log2_arrangements(count, moved) + restricted_in_block_bits(spec)


@register_cipher("invariant")
class InvariantCipher(Cipher):
    """Full block scrambling (which a position-free ViT ignores exactly) with restricted
    in-block operations."""

    summary = "full BS + restricted PS/NP, for the position-free ViT"

    defaults: ClassVar[Mapping[str, ParamValue]] = {"pixel_fraction": 0.35, "flip_fraction": 0.35}

    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        block_order, element_order, flip = restricted_tables(key, spec, full_block_scramble=True)
        return GatherMask(
            *compose(
                block_index(spec.image_size, spec.block_size), block_order, element_order, flip
            )
        )

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        return log2_factorial(spec.blocks_per_side**2) + restricted_in_block_bits(spec)
