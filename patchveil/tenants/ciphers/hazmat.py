"""Raw keyed operations on flattened images: the back room. Prefer `Tenant` and `create_cipher`.

Every block-wise cipher here is a fixed gather of the H·W·3 bytes of an image followed by a
fixed XOR mask (negative–positive on uint8 is `255 - v == v ^ 0xFF`; on 4-bit values it is
`v ^ 0xF`). Building a cipher therefore means computing one index array and one mask once per
key; applying it is one vectorised `take` and one `xor` over the whole batch, with no Python
loop over images or blocks.

Per-image ciphers move whole blocks instead (`move_blocks`): a block row is 3·M contiguous bytes,
so a block order becomes a gather of rows of 3·M bytes (one index per block row, not per byte),
and an in-block transform touches only the blocks that drew it.

On the CPU the loops run compiled (`kernels`, numba) where numba is installed; the numpy code
here is the fallback and the reference they must equal byte for byte (`KERNELS` chooses).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from functools import cache, cached_property
from types import ModuleType

import numpy as np

KERNEL_CHOICES = ("numba", "numpy")


def kernels_from_environment() -> str:
    """`PATCHVEIL_KERNELS` ("numba" or "numpy"); unset: numba where it is installed."""
    wanted = os.environ.get("PATCHVEIL_KERNELS", "").strip().lower()
    installed = importlib.util.find_spec("numba") is not None
    if not wanted:
        return "numba" if installed else "numpy"
    if wanted not in KERNEL_CHOICES:
        raise ValueError(
            f"PATCHVEIL_KERNELS must be one of {', '.join(KERNEL_CHOICES)} (or unset: numba "
            f"where it is installed), got {wanted!r}"
        )
    if wanted == "numba" and not installed:
        raise ValueError("PATCHVEIL_KERNELS=numba, but numba is not installed (pip install numba)")
    return wanted


KERNELS = kernels_from_environment()
"""What runs the CPU loops: "numba" (compiled, `kernels`) or "numpy" (the reference). Read on
every call, so a test can switch it by assignment."""


def compiled_kernels(out: np.ndarray, *inputs: np.ndarray) -> ModuleType | None:
    """The `kernels` module when KERNELS is numba, every array is C-contiguous uint8 and `out`
    overlaps no input (a loop reads what it has not yet written), else None: numpy runs."""
    if KERNELS != "numba":
        return None
    arrays = (out, *inputs)
    if not all(array.dtype == np.uint8 and array.flags.c_contiguous for array in arrays):
        return None
    if any(np.may_share_memory(out, array) for array in inputs):
        return None
    from patchveil.tenants.ciphers import kernels  # numba loads on first use only

    return kernels


def is_word_aligned(array: np.ndarray) -> bool:
    """Whether a C-contiguous 2-D uint8 array's rows are whole uint64 words, 8-byte aligned."""
    return array.shape[-1] % 8 == 0 and array.__array_interface__["data"][0] % 8 == 0


def check_range(name: str, values: np.ndarray, stop: int) -> None:
    """Refuse indices outside [0, stop): the compiled loops trust every index they are given."""
    if values.size and (values.min() < 0 or values.max() >= stop):
        raise ValueError(
            f"{name} must lie in [0, {stop}), got values in [{values.min()}, {values.max()}]"
        )


def checked_per_block(
    name: str, values: np.ndarray, count: int, blocks: int, stop: int | None, dtype: type
) -> np.ndarray:
    """`values` (one per image and block, each in [0, stop) unless stop is None) as a
    C-contiguous array of `dtype` for the compiled loops, or a ValueError naming it."""
    if values.shape != (count, blocks):
        raise ValueError(f"{name} must be ({count}, {blocks}), got {list(values.shape)}")
    if stop is not None:
        check_range(name, values, stop)
    return np.ascontiguousarray(values, dtype=dtype)


def block_index(image_size: int, block_size: int, channels: int = 3) -> np.ndarray:
    """Flat HWC indices of every block element: shape (blocks, block_size² · channels).

    Blocks are numbered in raster order (the ViT token order); inside a block, elements are
    ordered (row, column, channel), which is the order of a patch-embedding weight reshaped
    from (D, C, M, M) to (D, M, M, C).
    """
    side = image_size // block_size
    flat = np.arange(image_size * image_size * channels, dtype=np.int64)
    grid = flat.reshape(side, block_size, side, block_size, channels)
    return grid.transpose(0, 2, 1, 3, 4).reshape(side * side, block_size * block_size * channels)


def compose(
    blocks: np.ndarray,
    block_order: np.ndarray,
    element_order: np.ndarray,
    flip: np.ndarray,
    flip_value: int = 0xFF,
) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices and XOR mask for a block-wise cipher.

    Encrypted block j, element e, is plain block `block_order[j]`, element
    `element_order[..., e]`, negated where `flip[..., e]`. `element_order` and `flip` may be
    one row shared by every block, shape (L,), or one row per destination block, shape (N, L).
    """
    count, length = blocks.shape
    element_order = np.broadcast_to(element_order, (count, length))
    flip = np.broadcast_to(flip, (count, length))
    source = np.empty(blocks.size, dtype=np.int64)
    mask = np.zeros(blocks.size, dtype=np.uint8)
    source_blocks = blocks[block_order]
    source[blocks] = np.take_along_axis(source_blocks, element_order, axis=1)
    mask[blocks] = np.where(flip, flip_value, 0)
    return source, mask


GATHER_BYTES = 2**19
"""Bytes of images `GatherMask.apply` gathers and masks at a time (about half a CPU's L2)."""


@dataclass(frozen=True, repr=False, eq=False)
class GatherMask:
    """`out[:, d] = images[:, source[d]] ^ mask[d]` over flattened images."""

    source: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.source.setflags(write=False)
        self.mask.setflags(write=False)

    @cached_property
    def has_mask(self) -> bool:
        return bool(self.mask.any())

    @cached_property
    def row_length(self) -> int:
        """The fewest values a row of `flat` needs (one past the largest source position)."""
        return int(self.source.max()) + 1 if self.source.size else 0

    @cached_property
    def compact_source(self) -> np.ndarray:
        """`source` as uint32, the compiled gather's index (unsigned: no check for negatives)."""
        compact = self.source.astype(np.uint32)
        compact.setflags(write=False)
        return compact

    @cached_property
    def mask_words(self) -> np.ndarray | None:
        """`mask` as little-endian uint64 words, for the compiled gather that stores whole words;
        None where a row is not whole words (or words are not little-endian)."""
        if self.mask.size % 8 or sys.byteorder != "little":
            return None
        words = self.mask.copy().view(np.uint64)
        words.setflags(write=False)
        return words

    def apply(
        self, flat: np.ndarray, out: np.ndarray | None = None, device: str | None = None
    ) -> np.ndarray:
        """The gathered, masked images; written into `out` (same shape as `flat`) when given;
        computed with torch on `device` when given (see `gpu`)."""
        if device is not None:
            from patchveil.tenants.ciphers.gpu import apply_on_device

            return apply_on_device(self, flat, out, device)
        if flat.ndim != 2 or flat.shape[1] < self.row_length:
            raise ValueError(
                f"a gather table over rows of {self.row_length} values needs flat images "
                f"(N, {self.row_length}), got {list(flat.shape)}"
            )
        if out is None:
            out = np.empty((len(flat), self.source.size), dtype=flat.dtype)
        kernels = compiled_kernels(out, flat, self.mask)
        if kernels is not None and out.shape == (len(flat), self.source.size):
            if self.mask_words is not None and is_word_aligned(out):
                serial, parallel = kernels.gather_xor, kernels.gather_xor_parallel
                target, mask = out.view(np.uint64), self.mask_words
            else:
                serial, parallel = kernels.gather_xor_bytes, kernels.gather_xor_bytes_parallel
                target, mask = out, self.mask
            kernels.run(serial, parallel, out.nbytes, flat, self.compact_source, mask, target)
            return out
        # A few images at a time (about GATHER_BYTES of them, and at least 64: numpy's take costs
        # a pass over the index per call): each is masked while it is still in cache after its
        # gather, instead of a second pass over the whole batch.
        step = max(64, GATHER_BYTES // max(1, flat.shape[1]))
        masked = self.has_mask
        for start in range(0, len(flat), step):
            part = out[start : start + step]
            # Indices are in range by construction; mode='wrap' skips numpy's slower bounds
            # check (and, with `out`, lets numpy write there directly instead of via a buffer).
            np.take(flat[start : start + step], self.source, axis=1, mode="wrap", out=part)
            if masked:
                np.bitwise_xor(part, self.mask, out=part)
        return out

    def inverse(self) -> GatherMask:
        inverse_source = np.empty_like(self.source)
        inverse_source[self.source] = np.arange(self.source.size, dtype=self.source.dtype)
        return GatherMask(inverse_source, self.mask[inverse_source].copy())

    def then(self, other: GatherMask) -> GatherMask:
        """The composition: apply `self`, then `other`."""
        return GatherMask(self.source[other.source], self.mask[other.source] ^ other.mask)

    def __repr__(self) -> str:
        return f"GatherMask(<{self.source.size} keyed positions>)"

    def __reduce__(self) -> object:
        raise TypeError("keyed gather tables are key material and cannot be pickled")


def split_nibbles(flat: np.ndarray) -> np.ndarray:
    """uint8 (N, K) → 4-bit values (N, 2K): high nibble then low nibble of each byte."""
    out = np.empty((flat.shape[0], flat.shape[1] * 2), dtype=np.uint8)
    np.right_shift(flat, 4, out=out[:, 0::2])
    np.bitwise_and(flat, 0x0F, out=out[:, 1::2])
    return out


def join_nibbles(nibbles: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The inverse of `split_nibbles` (into `out` when given)."""
    high = np.left_shift(nibbles[:, 0::2], 4, out=out)
    return np.bitwise_or(high, nibbles[:, 1::2], out=high)


def gather_nibble_halves(
    high: GatherMask, low: GatherMask, flat: np.ndarray, out: np.ndarray
) -> None:
    """out := (high.apply(nibbles) << 4) | low.apply(nibbles), the nibbles of `flat` laid out as
    [all high | all low] (N, 2K): two gathers of 4-bit values joined into bytes (as `le` does).

    Compiled, an image at a time: split into a buffer in cache, then one pass over its output;
    in numpy, a few images at a time (as `GatherMask.apply` gathers them).
    """
    row = flat.shape[1]
    if out.shape != (len(flat), high.source.size) or low.source.size != high.source.size:
        raise ValueError(
            f"two nibble tables of one size and out (N, that size) are needed, got tables of "
            f"{high.source.size} and {low.source.size} and out {list(out.shape)}"
        )
    for table in (high, low):
        if table.row_length > 2 * row:
            raise ValueError(
                f"a nibble table over {table.row_length} nibbles needs images of "
                f"{(table.row_length + 1) // 2} bytes or more, got {row}"
            )
    if len(flat) == 0:
        return
    kernels = compiled_kernels(out, flat, high.mask, low.mask)
    # 4-bit masks (as `le` has) make one byte mask for both halves.
    if kernels is not None and ((high.mask | low.mask) < 16).all():
        kernels.run(
            kernels.gather_nibbles,
            kernels.gather_nibbles_parallel,
            out.nbytes,
            flat,
            high.compact_source,
            low.compact_source,
            (high.mask << 4) | low.mask,
            np.empty((kernels.thread_count(), 2 * row), dtype=np.uint8),
            out,
        )
        return
    step = min(len(flat), max(64, GATHER_BYTES // max(1, row)))
    nibbles = np.empty((step, 2 * row), dtype=np.uint8)
    gathered = np.empty((step, out.shape[1]), dtype=np.uint8)
    for start in range(0, len(flat), step):
        part, target = flat[start : start + step], out[start : start + step]
        count = len(part)
        np.right_shift(part, 4, out=nibbles[:count, :row])
        np.bitwise_and(part, 0x0F, out=nibbles[:count, row:])
        high_part = high.apply(nibbles[:count], out=gathered[:count])
        low.apply(nibbles[:count], out=target)
        np.left_shift(high_part, 4, out=high_part)
        np.bitwise_or(target, high_part, out=target)


def dihedral_orders(block_size: int, channels: int = 3) -> np.ndarray:
    """The 8 rotations/flips of an M×M×C block as element orders, shape (8, M·M·C)."""
    grid = np.arange(block_size * block_size * channels).reshape(block_size, block_size, channels)
    orders = []
    for flipped in (grid, grid[:, ::-1]):
        for turns in range(4):
            orders.append(np.rot90(flipped, turns, axes=(0, 1)).reshape(-1))
    return np.stack(orders).astype(np.int64)


def channel_orders(block_size: int, channel_permutations: np.ndarray) -> np.ndarray:
    """Element orders that permute the channels of every pixel of a block.

    `channel_permutations` is (K, 3); the result is (K, M·M·3).
    """
    pixels = np.arange(block_size * block_size)[:, None] * 3
    return (pixels[None, :, :] + channel_permutations[:, None, :]).reshape(
        len(channel_permutations), -1
    )


ALL_CHANNEL_PERMUTATIONS = np.array(
    [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], dtype=np.int64
)


def block_rows(image_size: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the block rows of an image lie, as segments of 3·M contiguous bytes.

    An image [H, W, 3] is H·(W/M) segments (segment y·(W/M) + x is pixel row y, block column x).
    Returns `first` (blocks,): the segment of row 0 of every block (row r of block b is segment
    `first[b] + r·(W/M)`), and `block_of`, `row_of` (segments,): the block and the row of it that
    every segment holds.
    """
    side = image_size // block_size
    first = (np.arange(side)[:, None] * (block_size * side) + np.arange(side)[None, :]).reshape(-1)
    pixel_row, block_column = np.divmod(np.arange(image_size * side), side)
    block_row, row_of = np.divmod(pixel_row, block_size)
    return first, block_row * side + block_column, row_of


@dataclass(frozen=True)
class BlockGeometry:
    """Where the blocks of a flat image lie, in the words the compiled loops move at a time.

    A block is `block_size` rows of 3·M contiguous bytes, a pixel row (`stride` words) apart;
    `words` (8, 4, 2 or 1 bytes) is the widest unsigned word that divides a block row and the
    alignment of the arrays, so whole rows move a word at a time.
    """

    image_size: int
    block_size: int
    words: int

    @classmethod
    def of(
        cls, flat: np.ndarray, out: np.ndarray, image_size: int, block_size: int
    ) -> BlockGeometry:
        row_length = 3 * image_size * image_size
        for array in (flat, out):
            if array.ndim != 2 or array.shape != (len(flat), row_length):
                raise ValueError(
                    f"flat images of size {image_size} must be (N, {row_length}), "
                    f"got {list(array.shape)}"
                )
        if image_size % block_size:
            raise ValueError(f"block size {block_size} does not divide image size {image_size}")
        row_bytes = 3 * block_size
        addresses = [array.__array_interface__["data"][0] for array in (flat, out)]
        words = next(
            size
            for size in (8, 4, 2, 1)
            if row_bytes % size == 0 and all(address % size == 0 for address in addresses)
        )
        return cls(image_size, block_size, words)

    @property
    def side(self) -> int:
        return self.image_size // self.block_size

    @property
    def blocks(self) -> int:
        return self.side**2

    @property
    def row_bytes(self) -> int:
        return 3 * self.block_size

    def words_of(self, flat: np.ndarray) -> np.ndarray:
        return flat if self.words == 1 else flat.view(np.dtype(f"<u{self.words}"))

    def block_start(self) -> np.ndarray:
        """The word where every block starts (row 0, column 0), uint64."""
        first, _, _ = block_rows(self.image_size, self.block_size)
        return (first * (self.row_bytes // self.words)).astype(np.uint64)

    def loop_arguments(self) -> tuple[np.ndarray, tuple[np.uint64, ...]]:
        """block_start and (block_size, row_words, stride, words): as the loops take them."""
        row_words = self.row_bytes // self.words
        sizes = (self.block_size, row_words, self.side * row_words, self.words)
        return self.block_start(), tuple(np.uint64(size) for size in sizes)


def move_blocks(
    flat: np.ndarray,
    out: np.ndarray,
    block_order: np.ndarray,
    image_size: int,
    block_size: int,
) -> None:
    """`out` block j of image n := `flat` block `block_order[n, j]`, whole blocks at a time.

    `flat` and `out` are (N, H·W·3) uint8; `block_order` is (N, blocks). One gather of rows of
    3·M bytes: the index holds one entry per block row (1/(3·M) of the bytes moved).
    """
    count = len(flat)
    if count == 0:
        return
    kernels = compiled_kernels(out, flat)
    if kernels is not None:
        geometry = BlockGeometry.of(flat, out, image_size, block_size)
        blocks = geometry.blocks
        order = checked_per_block("block_order", block_order, count, blocks, blocks, np.int64)
        kernels.run(
            kernels.move_blocks,
            kernels.move_blocks_parallel,
            out.nbytes,
            geometry.words_of(flat),
            order,
            *geometry.loop_arguments(),
            geometry.words_of(out),
        )
        return
    first, block_of, row_of = block_rows(image_size, block_size)
    segments = block_of.size
    side = image_size // block_size
    # Segment s of image n is row row_of[s] of the block block_order[n, block_of[s]].
    source = np.take(first, block_order)
    source += (np.arange(count, dtype=np.int64) * segments)[:, None]
    index = np.take(source, block_of, axis=1)
    index += row_of * side
    segment_bytes = 3 * block_size
    np.take(
        flat.reshape(count * segments, segment_bytes),
        index.reshape(-1),
        axis=0,
        mode="wrap",
        out=out.reshape(count * segments, segment_bytes),
    )


def channel_permutation(element_order: np.ndarray) -> np.ndarray | None:
    """The channel order (3,) if `element_order` only permutes the channels of every pixel (a
    colour shuffle) the same way, else None."""
    pixels = element_order.reshape(-1, 3)
    channels = pixels[0] - pixels[0].min()
    if (pixels == np.arange(0, element_order.size, 3)[:, None] + channels).all():
        return channels
    return None


# --- pixel orders inside blocks (the `px` groups of the disposable cipher) ------------------
PIXEL_WORD_RANGE = 2**48
"""The most one 64-bit stream word draws: consecutive ranges whose product stays ≤ 2^48."""
_LOW32 = np.uint64(2**32 - 1)
_SHIFT32 = np.uint64(32)


@cache
def pixel_draw_plan(pixels: int) -> np.ndarray:
    """Which stream word each step of a block's Fisher–Yates shuffle draws from.

    Step s (s = 0 … pixels−2) swaps position i = pixels−1−s with a position drawn uniformly from
    [0, i] (a range of r = i + 1 ≤ 2^16). Consecutive ranges share one 64-bit word x while their
    product R stays ≤ 2^48: the word gives the digits of ⌊x·R / 2^64⌋ in that mixed radix, each
    by one multiply (t = x·r, digit ⌊t / 2^64⌋, x = t mod 2^64: `next_digit`), so every word's
    digits are uniform to within a relative R / 2^64 ≤ 2^-16. Returns the word index of every
    step (uint32); a block draws last + 1 words (none for one-pixel blocks; one for 4×4)."""
    if pixels > 2**16:
        raise ValueError(f"blocks of at most 2^16 pixels, got {pixels}")
    plan = np.empty(max(pixels - 1, 0), dtype=np.uint32)
    word, product = 0, 1
    for step, choices in enumerate(range(pixels, 1, -1)):
        if product * choices > PIXEL_WORD_RANGE:
            word, product = word + 1, 1
        product *= choices
        plan[step] = word
    plan.setflags(write=False)  # one shared plan per block size
    return plan


def next_digit(fraction: np.ndarray, choices: int) -> tuple[np.ndarray, np.ndarray]:
    """(⌊fraction · choices / 2^64⌋, fraction · choices mod 2^64) for uint64 `fraction` and
    `choices` < 2^32, exactly, in 64-bit halves (the compiled loop does the same)."""
    times = np.uint64(choices)
    high = (fraction >> _SHIFT32) * times
    low = (fraction & _LOW32) * times
    middle = high + (low >> _SHIFT32)
    return middle >> _SHIFT32, (middle << _SHIFT32) | (low & _LOW32)


def pixel_words_per_block(pixels: int) -> int:
    plan = pixel_draw_plan(pixels)
    return int(plan[-1]) + 1 if plan.size else 0


def pixel_orders(words: np.ndarray, pixels: int) -> np.ndarray:
    """Every row's pixel order (R, pixels) from its stream words (R, `pixel_words_per_block`)
    uint64: position k of the order holds the pixel that goes to place k. The reference for
    the compiled loop; all rows at once, one Fisher–Yates step at a time."""
    plan = pixel_draw_plan(pixels)
    rows = words.shape[0]
    order = np.broadcast_to(np.arange(pixels, dtype=np.int64), (rows, pixels)).copy()
    every = np.arange(rows)
    fraction = np.zeros(rows, dtype=np.uint64)
    current = -1
    for step, choices in enumerate(range(pixels, 1, -1)):
        if plan[step] != current:
            current = int(plan[step])
            fraction = words[:, current]
        digit, fraction = next_digit(fraction, choices)
        drawn = digit.astype(np.int64)
        last = choices - 1
        there = order[every, drawn]
        order[every, drawn] = order[:, last]
        order[:, last] = there
    return order


def shuffle_block_pixels(
    flat: np.ndarray, words: np.ndarray, image_size: int, block_size: int, inverse: bool
) -> None:
    """In place, every block of every image of `flat` (N, H·W·3) uint8: pixel k of the block
    becomes pixel order[k] (`inverse`: pixel order[k] becomes pixel k), the block's order drawn
    from its `pixel_words_per_block` words of `words` (N, blocks · words per block) uint64."""
    count = len(flat)
    pixels = block_size * block_size
    per_block = pixel_words_per_block(pixels)
    side = image_size // block_size
    if count == 0 or per_block == 0:
        return
    if not flat.flags.c_contiguous:
        raise ValueError("pixels are shuffled in place: `flat` must be C-contiguous")
    if words.shape != (count, side * side * per_block) or words.dtype != np.uint64:
        raise ValueError(
            f"pixel words must be uint64 of shape {(count, side * side * per_block)}, got "
            f"{words.dtype} {words.shape}"
        )
    kernels = compiled_kernels(flat)
    if kernels is not None:
        rows, columns = np.divmod(np.arange(pixels, dtype=np.uint64), np.uint64(block_size))
        pixel_offset = (rows * np.uint64(image_size) + columns) * np.uint64(3)
        block_rows_, block_columns = np.divmod(np.arange(side * side, dtype=np.uint64), side)
        block_base = (
            block_rows_ * np.uint64(block_size * image_size) + block_columns * np.uint64(block_size)
        ) * np.uint64(3)
        kernels.run(
            kernels.shuffle_block_pixels,
            kernels.shuffle_block_pixels_parallel,
            flat.nbytes,
            flat,
            np.ascontiguousarray(words),
            pixel_draw_plan(pixels),
            pixel_offset,
            block_base,
            inverse,
        )
        return
    order = pixel_orders(words.reshape(count * side * side, per_block), pixels)
    grid = flat.reshape(count, side, block_size, side, block_size, 3).transpose(0, 1, 3, 2, 4, 5)
    blocks = grid.reshape(count, side * side, pixels, 3)  # a copy (the transpose)
    order = order.reshape(count, side * side, pixels, 1)
    if inverse:
        moved = np.empty_like(blocks)
        np.put_along_axis(moved, order, blocks, axis=2)
    else:
        moved = np.take_along_axis(blocks, order, axis=2)
    grid[...] = moved.reshape(count, side, side, block_size, block_size, 3)


def shuffle_channels(
    source: np.ndarray, target: np.ndarray, channels: np.ndarray, flip_value: int
) -> None:
    """target pixel channel c := source channel `channels[c]` XOR `flip_value`, over 1-D runs of
    whole pixels (3 bytes each).

    Every byte whose channel moves by the same offset d is one contiguous copy of the run shifted
    by d (a memcpy, or a vectorised XOR); only the channels with another offset are strided
    copies. A channel rotation is then one shifted copy and one third strided, a swap one copy
    and two thirds strided, instead of three strided thirds.
    """
    offsets = channels - np.arange(3)
    shift = int(np.bincount(offsets + 2).argmax()) - 2  # the most common offset
    size = source.size
    # Bytes i of target from i + shift of source; bytes of the other channels (and the one or
    # two bytes at the ends that would read past the run) are all overwritten below.
    low, high = max(0, -shift), size - max(0, shift)

    def move(into: np.ndarray, source_part: np.ndarray) -> None:
        if flip_value:
            np.bitwise_xor(source_part, flip_value, out=into)
        else:
            np.copyto(into, source_part)

    move(target[low:high], source[low + shift : high + shift])
    for channel in range(3):
        if offsets[channel] != shift:
            move(target[channel::3], source[channels[channel] :: 3])


def transform_blocks(
    source: np.ndarray, target: np.ndarray, element_order: np.ndarray, flip_value: int
) -> None:
    """target[b] := source[b] in `element_order`, XOR `flip_value`, for every row b (blocks,
    M·M·3) of the two (distinct) arrays.

    A colour shuffle is three strided copies (or XORs), much faster than a `take` of every byte;
    the flip rides on the copy that moves the bytes anyway.
    """
    identity = np.array_equal(element_order, np.arange(element_order.size))
    channels = None if identity else channel_permutation(element_order)
    if identity:
        if flip_value:
            np.bitwise_xor(source, flip_value, out=target)
        else:
            np.copyto(target, source)
    elif channels is not None:
        shuffle_channels(source.reshape(-1), target.reshape(-1), channels, flip_value)
    else:
        np.take(source, element_order, axis=1, mode="wrap", out=target)
        if flip_value:
            np.bitwise_xor(target, flip_value, out=target)


class Scratch:
    """Working buffers reused from chunk to chunk of one batch, by name: a chunk's temporaries
    then cost no fresh memory (and no page faults) after the first chunk."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A uint8 array of `shape` (contents undefined), in the buffer called `name`."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer[:size].reshape(shape)


def move_and_transform_blocks(
    flat: np.ndarray,
    out: np.ndarray,
    block_order: np.ndarray,
    flip_values: np.ndarray | None,
    move_index: np.ndarray | None,
    element_orders: np.ndarray,
    image_size: int,
    block_size: int,
    scratch: Scratch | None = None,
) -> None:
    """`move_blocks`, then per block of `out`: XOR `flip_values[n, j]` and elements in order
    `element_orders[move_index[n, j]]` (either step skipped when its array is None).

    The moved blocks are gathered block after block, grouped by what they draw (an in-block
    order and a flip), so each kind is one operation over one contiguous slice; a second gather
    of 3·M-byte rows puts every block back in image layout.
    """
    count = len(flat)
    if count == 0:
        return
    kernels = compiled_kernels(out, flat)
    if kernels is not None:
        move_and_transform_compiled(
            kernels,
            flat,
            out,
            block_order,
            flip_values,
            move_index,
            element_orders,
            image_size,
            block_size,
        )
        return
    first, block_of, row_of = block_rows(image_size, block_size)
    side = image_size // block_size
    blocks_per_image, segments = first.size, block_of.size
    row_bytes = 3 * block_size
    length = block_size * row_bytes
    total = count * blocks_per_image
    # What every block does: kind = move · (flip values) + flip value's rank, a small integer,
    # so the stable argsort that groups blocks by kind is a radix sort.
    kind = np.zeros(total, dtype=np.uint16)
    if move_index is not None:
        kind += move_index.reshape(-1).astype(np.uint16)
    flip_levels = np.zeros(1, dtype=np.uint8)
    if flip_values is not None:
        flips = flip_values.reshape(-1).astype(np.uint8)
        flip_levels = np.flatnonzero(np.bincount(flips, minlength=256)).astype(np.uint8)
        rank_of_level = np.zeros(256, dtype=np.uint16)
        rank_of_level[flip_levels] = np.arange(len(flip_levels), dtype=np.uint16)
        kind *= len(flip_levels)
        kind += np.take(rank_of_level, flips)
    kinds = len(element_orders) * len(flip_levels)
    work = np.argsort(kind, kind="stable")
    ends = np.cumsum(np.bincount(kind, minlength=kinds))
    # Row r of the w-th worked block is segment first[source block] + r·side of its image.
    image = work // blocks_per_image
    index = np.take(first, np.take(block_order.reshape(-1), work))
    index += image * segments
    del image
    rows_index = index[:, None] + np.arange(block_size, dtype=np.int64) * side
    del index
    scratch = Scratch() if scratch is None else scratch
    gathered = scratch.array("gathered", (total, length))
    np.take(
        flat.reshape(count * segments, row_bytes),
        rows_index.reshape(-1),
        axis=0,
        mode="wrap",
        out=gathered.reshape(total * block_size, row_bytes),
    )
    del rows_index
    worked = scratch.array("worked", (total, length))
    start = 0
    for kind_number, end in enumerate(ends.tolist()):
        if end > start:
            move, level = divmod(kind_number, len(flip_levels))
            transform_blocks(
                gathered[start:end],
                worked[start:end],
                element_orders[move],
                int(flip_levels[level]),
            )
        start = end
    # Segment s of image n is row row_of[s] of block (n, block_of[s]): of the worked block
    # that holds it.
    rank = np.empty(total, dtype=np.int64)
    rank[work] = np.arange(total, dtype=np.int64)
    back = np.take(rank.reshape(count, blocks_per_image), block_of, axis=1)
    back *= block_size
    back += row_of
    np.take(
        worked.reshape(total * block_size, row_bytes),
        back.reshape(-1),
        axis=0,
        mode="wrap",
        out=out.reshape(count * segments, row_bytes),
    )


def move_and_transform_compiled(
    kernels: ModuleType,
    flat: np.ndarray,
    out: np.ndarray,
    block_order: np.ndarray,
    flip_values: np.ndarray | None,
    move_index: np.ndarray | None,
    element_orders: np.ndarray,
    image_size: int,
    block_size: int,
) -> None:
    """`move_and_transform_blocks` by the compiled loop: block after block, straight from `flat`
    into `out` (no working copies); a block whose order moves nothing moves a word at a time."""
    count = len(flat)
    geometry = BlockGeometry.of(flat, out, image_size, block_size)
    blocks, row_bytes = geometry.blocks, geometry.row_bytes
    length = block_size * row_bytes
    order = checked_per_block("block_order", block_order, count, blocks, blocks, np.int64)
    if move_index is None:
        element_orders = np.arange(length, dtype=np.int64)[None]
        moves = np.zeros((count, blocks), dtype=np.int64)
    else:
        moves = checked_per_block(
            "move_index", move_index, count, blocks, len(element_orders), np.int64
        )
    if element_orders.ndim != 2 or element_orders.shape[1] != length:
        raise ValueError(
            f"element orders must be (K, {length}) for {block_size}-pixel blocks, "
            f"got {list(element_orders.shape)}"
        )
    check_range("element_orders", element_orders, length)
    if flip_values is None:
        flips = np.zeros((count, blocks), dtype=np.uint8)
    else:
        flips = checked_per_block("flip_values", flip_values, count, blocks, None, np.uint8)
    word = np.dtype(f"<u{geometry.words}")
    flip_words = flips.astype(word) * word.type(int.from_bytes(b"\x01" * geometry.words, "little"))
    # Element e of a block in order k is byte offsets[k, e] from the block's start.
    element_row, element_column = np.divmod(element_orders, row_bytes)
    offsets = (element_row * (geometry.side * row_bytes) + element_column).astype(np.uint32)
    identity = (element_orders == np.arange(length)).all(axis=1)
    kernels.run(
        kernels.move_and_transform_blocks,
        kernels.move_and_transform_blocks_parallel,
        out.nbytes,
        geometry.words_of(flat),
        flat,
        order,
        flips,
        flip_words,
        moves,
        offsets,
        identity,
        *geometry.loop_arguments(),
        geometry.words_of(out),
        out,
    )
