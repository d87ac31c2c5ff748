"""Compiled (numba) loops for the keyed operations of `hazmat`: the same bytes as its numpy code.

Only `hazmat` calls these, once it has checked shapes, dtypes and index ranges: the loops do no
bounds checks of their own. They see index tables and masks, never a key.

Every index a loop computes is unsigned (uint32 tables, uint64 offsets): numba checks a signed
index for a negative value on every access, which costs several times the access itself here.
Whole rows of a block move as machine words (`flat` viewed as uint16/32/64 where a row's
3·M bytes allow), only bytes that change place inside a block are gathered one by one.

Each loop exists twice, over images in the calling thread and split over numba's threads
(`parallel=True`). The calling thread is the default: on a busy machine (the 2-core VM of
bench/results/cipher_throughput.md) waking numba's threads cost 5–7 ms per call, several times
the loop itself for a chunk of images, while one thread already moves bytes at memory speed.
PATCHVEIL_KERNEL_THREADS=N (N > 1) splits every batch of PARALLEL_BYTES or more over N threads,
one threaded loop at a time: numba's default threads (`workqueue`) must not be entered from two
Python threads at once, so a call that finds them busy runs in its own thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange


def threads_from_environment() -> int:
    """PATCHVEIL_KERNEL_THREADS (default 1: the calling thread), at most numba's thread count."""
    value = os.environ.get("PATCHVEIL_KERNEL_THREADS", "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"PATCHVEIL_KERNEL_THREADS must be a whole number ≥ 1, got {value!r}")
    return min(int(value), numba.config.NUMBA_NUM_THREADS)


THREADS = threads_from_environment()
"""Threads a big batch is split over (1: every loop runs in the calling thread)."""

PARALLEL_BYTES = 2**20
"""Bytes of output below which a loop runs in the calling thread even when THREADS > 1."""

_threads_busy = threading.Lock()


def thread_count() -> int:
    """The threads a threaded loop is split over."""
    return THREADS


def run(serial: Callable[..., None], parallel: Callable[..., None], size: int, *args: Any) -> None:
    """`parallel(*args)` on THREADS threads for `size` bytes of output or more when THREADS > 1
    and the threads are free, else `serial(*args)`."""
    threaded = THREADS > 1 and size >= PARALLEL_BYTES
    if threaded and _threads_busy.acquire(blocking=False):
        try:
            numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
            parallel(*args)
        finally:
            _threads_busy.release()
        return
    serial(*args)


# --- out[n, d] = flat[n, source[d]] ^ mask[d] -------------------------------------------------
# Eight gathered bytes are put together in a register and stored (and masked) as one uint64:
# one store and one mask load per eight bytes instead of eight (`gather_xor_bytes` where a row
# is not whole words).


@njit(cache=True, nogil=True)
def _gather_word(image, source, at):
    """image[source[at]], …, image[source[at + 7]] as one little-endian uint64 (`at` a uint64:
    numba makes a float of uint64 + int64)."""
    word = np.uint64(0)
    for byte in range(np.uint64(8)):
        word |= np.uint64(image[source[at + byte]]) << (np.uint64(8) * byte)
    return word


@njit(cache=True, nogil=True)
def _gather_xor_image(image, source, mask_words, target_words):
    for word in range(np.uint64(target_words.size)):
        target_words[word] = _gather_word(image, source, np.uint64(8) * word) ^ mask_words[word]


@njit(cache=True, nogil=True)
def gather_xor(flat, source, mask_words, out_words):
    for image in range(flat.shape[0]):
        _gather_xor_image(flat[image], source, mask_words, out_words[image])


@njit(cache=True, nogil=True, parallel=True)
def gather_xor_parallel(flat, source, mask_words, out_words):
    for image in prange(flat.shape[0]):
        _gather_xor_image(flat[image], source, mask_words, out_words[image])


@njit(cache=True, nogil=True)
def _gather_xor_bytes_image(image, source, mask, target):
    for position in range(source.size):
        target[position] = image[source[position]] ^ mask[position]


@njit(cache=True, nogil=True)
def gather_xor_bytes(flat, source, mask, out):
    for image in range(flat.shape[0]):
        _gather_xor_bytes_image(flat[image], source, mask, out[image])


@njit(cache=True, nogil=True, parallel=True)
def gather_xor_bytes_parallel(flat, source, mask, out):
    for image in prange(flat.shape[0]):
        _gather_xor_bytes_image(flat[image], source, mask, out[image])


# --- 4-bit values: out[n, d] = (nibbles[high[d]] << 4 | nibbles[low[d]]) ^ mask[d] ---------
# `nibbles` (one row of 2K per thread) takes an image split into [all high | all low] nibbles,
# one image at a time, in cache; `high` and `low` (uint32) index that row. `le`'s two gathers and
# the join of their nibbles, in one pass over the output.


@njit(cache=True, nogil=True)
def _gather_nibbles_image(image, high, low, mask, nibbles, target):
    size = image.size
    high_half, low_half = nibbles[:size], nibbles[size:]
    for position in range(size):
        high_half[position] = image[position] >> 4
        low_half[position] = image[position] & 0x0F
    for position in range(high.size):
        value = nibbles[high[position]] * np.uint8(16) + nibbles[low[position]]
        target[position] = value ^ mask[position]


@njit(cache=True, nogil=True)
def gather_nibbles(flat, high, low, mask, nibbles, out):
    for image in range(flat.shape[0]):
        _gather_nibbles_image(flat[image], high, low, mask, nibbles[0], out[image])


@njit(cache=True, nogil=True, parallel=True)
def gather_nibbles_parallel(flat, high, low, mask, nibbles, out):
    count, parts = flat.shape[0], nibbles.shape[0]
    for part in prange(parts):  # a run of images per nibble buffer
        for image in range(part * count // parts, (part + 1) * count // parts):
            _gather_nibbles_image(flat[image], high, low, mask, nibbles[part], out[image])


# --- whole blocks moved, and optionally flipped and reordered inside --------------------------
# `geometry` (uint64s), in words of the views the loops get: (block_size, row_words, stride,
# words): a block is `block_size` rows of `row_words` words of `words` bytes, `stride` words apart
# in the image. Block b starts at word `block_start[b]` (uint64).


@njit(cache=True, nogil=True)
def _move_image(image, order, block_start, geometry, target):
    block_size, row_words, stride, _ = geometry
    for block in range(order.size):
        source = block_start[order[block]]
        destination = block_start[block]
        for row in range(block_size):
            start = source + row * stride
            end = destination + row * stride
            for column in range(row_words):
                target[end + column] = image[start + column]


@njit(cache=True, nogil=True)
def move_blocks(flat, block_order, block_start, geometry, out):
    for image in range(flat.shape[0]):
        _move_image(flat[image], block_order[image], block_start, geometry, out[image])


@njit(cache=True, nogil=True, parallel=True)
def move_blocks_parallel(flat, block_order, block_start, geometry, out):
    for image in prange(flat.shape[0]):
        _move_image(flat[image], block_order[image], block_start, geometry, out[image])


# With an in-block transform: `flips` (N, blocks) is each block's XOR as a byte, `flip_words`
# the same repeated over a word; `moves` (N, blocks) each block's in-block order: `offsets[k, e]`
# is the byte (from the block's start) that element e takes in order k, and `identity[k]` whether
# order k moves nothing (the block then moves a word at a time, else byte by byte). `flat` and
# `out` come as words, `flat_bytes` and `out_bytes` as the bytes of the same memory.


@njit(cache=True, nogil=True)
def _move_transform_image(
    image, image_bytes, order, flips, flip_words, moves, offsets, identity, block_start,
    geometry, target, target_bytes,
):  # fmt: skip
    block_size, row_words, stride, words = geometry
    row_bytes = row_words * words
    for block in range(order.size):
        source = block_start[order[block]]
        destination = block_start[block]
        move = moves[block]
        if identity[move]:
            flip = flip_words[block]
            for row in range(block_size):
                start = source + row * stride
                end = destination + row * stride
                for column in range(row_words):
                    target[end + column] = image[start + column] ^ flip
        else:
            flip = flips[block]
            element_offsets = offsets[move]
            source_bytes = image_bytes[source * words :]
            for row in range(block_size):
                # Slices, so every index below is a loop counter or uint32: no negative checks.
                row_target = target_bytes[(destination + row * stride) * words :]
                row_offsets = element_offsets[row * row_bytes :]
                for column in range(row_bytes):
                    row_target[column] = source_bytes[row_offsets[column]] ^ flip


@njit(cache=True, nogil=True)
def move_and_transform_blocks(
    flat, flat_bytes, block_order, flips, flip_words, moves, offsets, identity, block_start,
    geometry, out, out_bytes,
):  # fmt: skip
    for image in range(flat.shape[0]):
        _move_transform_image(
            flat[image], flat_bytes[image], block_order[image], flips[image], flip_words[image],
            moves[image], offsets, identity, block_start, geometry, out[image], out_bytes[image],
        )  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def move_and_transform_blocks_parallel(
    flat, flat_bytes, block_order, flips, flip_words, moves, offsets, identity, block_start,
    geometry, out, out_bytes,
):  # fmt: skip
    for image in prange(flat.shape[0]):
        _move_transform_image(
            flat[image], flat_bytes[image], block_order[image], flips[image], flip_words[image],
            moves[image], offsets, identity, block_start, geometry, out[image], out_bytes[image],
        )  # fmt: skip


# --- pixel orders inside blocks: hazmat.shuffle_block_pixels, in place -----------------------
_LOW32 = np.uint64(2**32 - 1)
_SHIFT32 = np.uint64(32)


@njit(cache=True, nogil=True)
def _shuffle_image_pixels(image, words, plan, pixel_offset, block_base, inverse):
    pixels = pixel_offset.size
    steps = plan.size
    per_block = np.uint64(plan[steps - 1]) + np.uint64(1)
    order = np.empty(pixels, dtype=np.uint64)
    buffer = np.empty(3 * pixels, dtype=np.uint8)
    for block in range(np.uint64(block_base.size)):
        # Fisher–Yates from the block's words (the same steps as hazmat.pixel_orders).
        for place in range(np.uint64(pixels)):
            order[place] = place
        first = block * per_block
        current = np.uint64(steps)  # no word yet
        fraction = np.uint64(0)
        for step in range(np.uint64(steps)):
            if plan[step] != current:
                current = np.uint64(plan[step])
                fraction = words[first + current]
            choices = np.uint64(pixels) - step
            # fraction · choices as 2^64·drawn + fraction, exactly (hazmat.next_digit).
            high = (fraction >> _SHIFT32) * choices
            low = (fraction & _LOW32) * choices
            middle = high + (low >> _SHIFT32)
            drawn = middle >> _SHIFT32
            fraction = (middle << _SHIFT32) | (low & _LOW32)
            last = choices - np.uint64(1)
            there = order[drawn]
            order[drawn] = order[last]
            order[last] = there
        base = block_base[block]
        for place in range(np.uint64(pixels)):
            at = base + pixel_offset[place]
            for channel in range(np.uint64(3)):
                buffer[np.uint64(3) * place + channel] = image[at + channel]
        for place in range(np.uint64(pixels)):
            if inverse:
                target = base + pixel_offset[order[place]]
                source = np.uint64(3) * place
            else:
                target = base + pixel_offset[place]
                source = np.uint64(3) * order[place]
            for channel in range(np.uint64(3)):
                image[target + channel] = buffer[source + channel]


@njit(cache=True, nogil=True)
def shuffle_block_pixels(flat, words, plan, pixel_offset, block_base, inverse):
    for image in range(flat.shape[0]):
        _shuffle_image_pixels(flat[image], words[image], plan, pixel_offset, block_base, inverse)


@njit(cache=True, nogil=True, parallel=True)
def shuffle_block_pixels_parallel(flat, words, plan, pixel_offset, block_base, inverse):
    for image in prange(flat.shape[0]):
        _shuffle_image_pixels(flat[image], words[image], plan, pixel_offset, block_base, inverse)
