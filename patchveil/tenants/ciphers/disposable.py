"""`disposable`: a fresh key per image. Every image gets its own random block order and, for
every block, its own random element of a small group G acting inside the block (negative–positive,
colour shuffle, optionally the 8 rotations/flips, or with `px` a random order of the block's
pixels: then no edge inside a block survives).

Nothing is shared between images, so the cross-image statistics that reveal a fixed in-block key
do not exist; and a position-free ViT whose patch embedding is invariant to G
(`patchveil.models`, `embedding="orbit"`) gives exactly the same output for every key, so a new
tenant or a rotated key needs no retraining. The per-image transform is derived from the tenant's
secret and a per-image nonce (the sample id), so the tenant can still decrypt.

`window=w` (blocks) keeps the coarse layout: blocks move only inside their own w×w window of
blocks, so the window a block came from is visible (the image at window resolution: 2×2 windows
of a 32×32 image in 4-pixel blocks show which quadrant each block is in) and the jigsaw breaks
into one puzzle per window. A ViT with one learned position per window and none inside it
(`window_position`) is exactly invariant to that. `window=0` (default) moves blocks anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from patchveil.errors import CipherConfigError
from patchveil.groups import parse_group, window_of_blocks
from patchveil.tenants.ciphers.base import Cipher, log2_factorial, register_cipher
from patchveil.tenants.ciphers.gpu import move_blocks_on_device
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    Scratch,
    block_index,
    channel_orders,
    dihedral_orders,
    move_and_transform_blocks,
    move_blocks,
    pixel_words_per_block,
    shuffle_block_pixels,
)
from patchveil.tenants.keys import CipherSpec, Key, ParamValue


def group_tables(group: str, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Element orders (|G|, L) and flip masks (|G|, L) of every element of a named group."""
    try:
        parsed = parse_group(group)
    except ValueError as error:
        raise CipherConfigError(str(error)) from None
    # A pixel shuffle (`px`) is not listed: it has (M²)! elements, drawn per block instead.
    moves = np.arange(3 * block_size * block_size, dtype=np.int64)[None]
    if parsed.colour_shuffle:
        moves = channel_orders(block_size, ALL_CHANNEL_PERMUTATIONS)
    if parsed.rotation_flip:
        geometry = dihedral_orders(block_size)
        # A colour shuffle, then a rotation/flip: every pair is one element.
        moves = np.take_along_axis(
            np.repeat(moves, len(geometry), axis=0), np.tile(geometry, (len(moves), 1)), axis=1
        )
    flips = np.zeros(moves.shape, dtype=np.uint8)
    if parsed.negative_positive:
        moves = np.concatenate([moves, moves])
        flips = np.concatenate([flips, np.full(flips.shape, 0xFF, dtype=np.uint8)])
    return moves, flips


@register_cipher("disposable")
class DisposableCipher(Cipher):
    summary = "fresh key per image: random block order + per-block group element"
    per_image = True
    defaults: ClassVar[Mapping[str, ParamValue]] = {"group": "np_cs", "window": 0}
    # The blocks gathered in work order, the same blocks worked on, their row indices.
    working_copies = 4

    def __init__(self, key: Key) -> None:
        super().__init__(key)
        self._key = key
        blocks = block_index(self.spec.image_size, self.spec.block_size)
        self._blocks = blocks
        window = check_window(self.spec)
        # The window of every block position, and the positions listed window by window; None
        # when blocks may go anywhere.
        self._windows = None if window == 0 else window_of_blocks(self.spec.blocks_per_side, window)
        self._by_window = (
            None if self._windows is None else np.argsort(self._windows, kind="stable")
        )
        self._windows_small = None if self._windows is None else self._windows.astype(np.uint16)
        group = str(self.spec.param_dict["group"])
        self._orders, self._flips = group_tables(group, self.spec.block_size)
        self._pixel_shuffle = parse_group(group).pixel_shuffle
        # Every group element is an in-block order (a "move") and a flip of the whole block:
        # split them, so a block's flip is one XOR and its move touches only moved blocks.
        if not (self._flips == self._flips[:, :1]).all():
            raise AssertionError("a group element's flip must cover its whole block")
        self._flip_of = self._flips[:, 0].copy()
        self._moves, self._move_of = np.unique(self._orders, axis=0, return_inverse=True)
        self._move_of = self._move_of.reshape(-1)
        self._inverse_moves = np.argsort(self._moves, axis=1)
        self._has_flips = bool(self._flip_of.any())
        identity = np.arange(self._orders.shape[1])
        self._has_moves = any(not np.array_equal(move, identity) for move in self._moves)

    def _draw(self, nonces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per image: a block order (N, blocks) and a group element per block (N, blocks)."""
        count = self._blocks.shape[0]
        # One hash per image (the head of its own stream), no per-image Python objects beyond it.
        key = self._key
        stream = b"".join(
            [key.keystream(f"disposable/{nonce}").head(16 * count) for nonce in nonces.tolist()]
        )
        # Big-endian 64-bit values, sorted in native byte order (the same values, sorted faster).
        raw = np.frombuffer(stream, dtype=">u8").astype(np.uint64).reshape(len(nonces), 2, count)
        # argsort of 64-bit uniform values: a uniform permutation (ties have probability ~2^-52).
        block_order = stable_argsort(raw[:, 0])
        if self._windows is not None:
            # The k-th position of the window-by-window list takes the k-th block of a list
            # sorted by (window, random value): a uniform permutation inside every window. Sorted
            # by value, then stably by window (a radix sort of small integers).
            by_window = np.argsort(self._windows_small[block_order], axis=1, kind="stable")
            shuffled = np.take_along_axis(block_order, by_window, axis=1)
            block_order = np.empty_like(shuffled)
            block_order[:, self._by_window] = shuffled
        # 2^64 mod |G| bias is below 2^-59 for |G| ≤ 96.
        element = (raw[:, 1] % np.uint64(len(self._orders))).astype(np.int64)
        return block_order, element

    def _draw_pixel_words(self, nonces: np.ndarray) -> np.ndarray:
        """Per image, the stream words of every encrypted block position's pixel order
        (N, blocks · words per block) uint64, for `hazmat.shuffle_block_pixels`. A stream of its
        own, so the block orders and elements are those of the group without `px`."""
        count = self._blocks.shape[0]
        per_image = 8 * count * pixel_words_per_block(self.spec.block_size**2)
        key = self._key
        stream = b"".join(
            [key.keystream(f"disposable-pixels/{nonce}").head(per_image) for nonce in nonces]
        )
        return np.frombuffer(stream, dtype=">u8").astype(np.uint64).reshape(len(nonces), -1)

    def transform_per_image(
        self,
        flat: np.ndarray,
        nonces: np.ndarray,
        inverse: bool,
        out: np.ndarray,
        device: str | None = None,
        scratch: Scratch | None = None,
    ) -> None:
        # Encrypted block j = plain block block_order[j], elements in order orders[element[j]],
        # XOR flips[element[j]] (0 or 0xFF over the whole block, so it commutes with the order).
        # Whole blocks move in one gather of block rows; blocks that also flip or reorder are
        # worked on grouped by their order, then put back (`move_and_transform_blocks`).
        if self._pixel_shuffle:
            # The pixel shuffle comes last on the way in (in place, on the output) and is undone
            # first on the way out (on a copy: the input is the caller's).
            size, block_size = self.spec.image_size, self.spec.block_size
            words = self._draw_pixel_words(nonces)
            if inverse:
                unshuffled = flat.copy()
                shuffle_block_pixels(unshuffled, words, size, block_size, True)
                self._move_and_transform(unshuffled, nonces, True, out, device, scratch)
            else:
                self._move_and_transform(flat, nonces, False, out, device, scratch)
                shuffle_block_pixels(out, words, size, block_size, False)
            return
        self._move_and_transform(flat, nonces, inverse, out, device, scratch)

    def _move_and_transform(
        self,
        flat: np.ndarray,
        nonces: np.ndarray,
        inverse: bool,
        out: np.ndarray,
        device: str | None,
        scratch: Scratch | None,
    ) -> None:
        """The block order and the listed group element of every block (the pixel shuffle apart)."""
        block_order, element = self._draw(nonces)
        size, block_size = self.spec.image_size, self.spec.block_size
        if inverse:
            # Plain block i = encrypted block j = inverse[i], undone: XOR, then inverse order.
            inverse_order = np.empty_like(block_order)
            np.put_along_axis(
                inverse_order,
                block_order,
                np.broadcast_to(np.arange(block_order.shape[1]), block_order.shape),
                axis=1,
            )
            block_order = inverse_order
            element = np.take_along_axis(element, inverse_order, axis=1)
        flips = self._flip_of[element] if self._has_flips else None
        moves = self._move_of[element] if self._has_moves else None
        orders = self._inverse_moves if inverse else self._moves
        if device is not None:
            move_blocks_on_device(
                flat, out, block_order, flips, moves, orders, size, block_size, device
            )
            return
        if flips is None and moves is None:
            move_blocks(flat, out, block_order, size, block_size)
        else:
            move_and_transform_blocks(
                flat, out, block_order, flips, moves, orders, size, block_size, scratch
            )

    @classmethod
    def check_params_fit(cls, spec: CipherSpec) -> None:
        check_window(spec)
        group_tables(str(spec.param_dict["group"]), spec.block_size)  # names a known group

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        """Distinct transforms of one image (each image draws its own)."""
        count = spec.blocks_per_side**2
        group = str(spec.param_dict["group"])
        group_tables(group, spec.block_size)  # names a known group
        group_bits = parse_group(group).log2_order(spec.block_size)
        window = check_window(spec)
        if window == 0:
            orders = log2_factorial(count)
        else:
            orders = (spec.blocks_per_side // window) ** 2 * log2_factorial(window * window)
        return orders + count * group_bits


def check_window(spec: CipherSpec) -> int:
    """The `window` parameter: 0 (whole image) or a block count dividing the blocks per side."""
    window = spec.param_dict.get("window", 0)
    side = spec.blocks_per_side
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise CipherConfigError(f"window must be 0 or a positive number of blocks, got {window!r}")
    if window and side % window:
        raise CipherConfigError(
            f"window {window} does not divide the {side} blocks per side; choose one of "
            f"{', '.join(str(d) for d in range(1, side + 1) if side % d == 0)} (0: whole image)"
        )
    return 0 if window == side else window


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """`np.argsort(values, axis=1, kind="stable")` of uint64 rows, faster: numpy's default sort
    (vectorised, not stable) gives the same order wherever a row has no two equal values, so only
    rows with a tie (probability ~2^-52 per pair of 64-bit values) are sorted again, stably."""
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    tied = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if tied.any():
        order[tied] = np.argsort(values[tied], axis=1, kind="stable")
    return order
