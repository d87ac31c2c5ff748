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
    gather_nibble_halves,
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

    # The high and low nibbles of a chunk (twice its size) and one gathered half.
    working_copies = 3

    def __init__(self, key: Key) -> None:
        super().__init__(key)
        self._halves = {table: nibble_halves(table) for table in (self._forward, self._inverse)}

    def transform(
        self, table: GatherMask, flat: np.ndarray, out: np.ndarray, device: str | None = None
    ) -> None:
        # Nibbles as [all high | all low] (two contiguous halves) rather than interleaved:
        # splitting and joining are then whole-row shifts and masks, not strided ones.
        high_table, low_table = self._halves[table]
        if device is not None:
            self._transform_on_device(high_table, low_table, flat, out, device)
            return
        # On the CPU, compiled or in numpy chunks that stay in cache (`gather_nibble_halves`).
        gather_nibble_halves(high_table, low_table, flat, out)

    @staticmethod
    def _transform_on_device(
        high_table: GatherMask,
        low_table: GatherMask,
        flat: np.ndarray,
        out: np.ndarray,
        device: str,
    ) -> None:
        """The split, both gathers and the join on `device` (the tables' torch path)."""
        row = flat.shape[1]
        nibbles = np.empty((len(flat), 2 * row), dtype=np.uint8)
        np.right_shift(flat, 4, out=nibbles[:, :row])
        np.bitwise_and(flat, 0x0F, out=nibbles[:, row:])
        high = high_table.apply(nibbles, device=device)
        low_table.apply(nibbles, out=out, device=device)
        np.left_shift(high, 4, out=high)
        np.bitwise_or(out, high, out=out)

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        length = 6 * spec.block_size**2
        return log2_factorial(length) + length


def nibble_halves(table: GatherMask) -> tuple[GatherMask, GatherMask]:
    """`table` over interleaved nibbles (high, low of byte 0, …) as two tables over
    [all high | all low] nibbles: the one that makes the output's high nibbles, and the low."""
    row = table.source.size // 2
    # Interleaved position q is byte q // 2, high nibble when q is even.
    position = np.where(table.source % 2 == 0, table.source // 2, row + table.source // 2)
    return (
        GatherMask(position[0::2].copy(), table.mask[0::2].copy()),
        GatherMask(position[1::2].copy(), table.mask[1::2].copy()),
    )
