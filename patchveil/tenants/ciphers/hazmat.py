"""Raw keyed operations on flattened images: the back room. Prefer `Tenant` and `create_cipher`.

Every block-wise cipher here is a fixed gather of the H·W·3 bytes of an image followed by a
fixed XOR mask (negative–positive on uint8 is `255 - v == v ^ 0xFF`; on 4-bit values it is
`v ^ 0xF`). Building a cipher therefore means computing one index array and one mask once per
key; applying it is one vectorised `take` and one `xor` over the whole batch, with no Python
loop over images or blocks.

Per-image ciphers move whole blocks instead (`move_blocks`): a block row is 3·M contiguous bytes,
so a block order becomes a gather of rows of 3·M bytes (one index per block row, not per byte),
and an in-block transform touches only the blocks that drew it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True, repr=False, eq=False)
class GatherMask:
    """`out[:, d] = images[:, source[d]] ^ mask[d]` over flattened images."""

    source: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        self.source.setflags(write=False)
        self.mask.setflags(write=False)

    @property
    def has_mask(self) -> bool:
        return bool(self.mask.any())

    def apply(
        self, flat: np.ndarray, out: np.ndarray | None = None, device: str | None = None
    ) -> np.ndarray:
        """The gathered, masked images; written into `out` (same shape as `flat`) when given;
        computed with torch on `device` when given (see `gpu`)."""
        if device is not None:
            from patchveil.tenants.ciphers.gpu import apply_on_device

            return apply_on_device(self, flat, out, device)
        # Indices are in range by construction; mode='wrap' skips numpy's slower bounds check
        # (and, with `out`, lets numpy write there directly instead of through a buffer).
        out = np.take(flat, self.source, axis=1, mode="wrap", out=out)
        if self.has_mask:
            np.bitwise_xor(out, self.mask, out=out)
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


def block_row_segments(image_size: int, block_size: int) -> np.ndarray:
    """Segment number of every row of every block, shape (blocks, block_size).

    An image [H, W, 3] is H·(W/M) segments of 3·M contiguous bytes (segment y·(W/M) + x is
    pixel row y, block column x); row r of block (i, j) is segment (i·M + r)·(W/M) + j.
    """
    side = image_size // block_size
    rows = np.arange(side)[:, None, None] * block_size + np.arange(block_size)[None, None, :]
    return (rows * side + np.arange(side)[None, :, None]).reshape(side * side, block_size)


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
    segments = block_row_segments(image_size, block_size)
    per_image = segments.size
    # Destination segment s (pixel row y, block column x) is row y % M of block
    # (y // M) · side + x, which takes the same row of its source block.
    destination = np.empty(per_image, dtype=np.int64)
    destination[segments.reshape(-1)] = np.arange(per_image)
    block_of, row_of = np.divmod(destination, block_size)
    index = segments[block_order[:, block_of], row_of]
    index += (np.arange(count, dtype=np.int64) * per_image)[:, None]
    segment_bytes = 3 * block_size
    np.take(
        flat.reshape(count * per_image, segment_bytes),
        index.reshape(-1),
        axis=0,
        mode="wrap",
        out=out.reshape(count * per_image, segment_bytes),
    )


def reorder_elements(blocks: np.ndarray, element_order: np.ndarray) -> None:
    """In place: every row of `blocks` (blocks, M·M·3) := its elements in `element_order`.

    An order that only permutes the channels of every pixel (a colour shuffle) is three strided
    copies, twice as fast as a `take` of every byte.
    """
    pixels = element_order.reshape(-1, 3)
    channels = pixels[0]
    if (pixels == np.arange(0, element_order.size, 3)[:, None] + channels).all():
        view = blocks.reshape(len(blocks), -1, 3)
        source = view.copy()
        for channel in range(3):
            view[:, :, channel] = source[:, :, channels[channel]]
        return
    blocks[...] = np.take(blocks, element_order, axis=1, mode="wrap")


def move_and_transform_blocks(
    flat: np.ndarray,
    out: np.ndarray,
    block_order: np.ndarray,
    flip_values: np.ndarray | None,
    move_index: np.ndarray | None,
    element_orders: np.ndarray,
    image_size: int,
    block_size: int,
) -> None:
    """`move_blocks`, then per block of `out`: XOR `flip_values[n, j]` and elements in order
    `element_orders[move_index[n, j]]` (either step skipped when its array is None).

    The moved blocks are gathered block after block, grouped by the in-block order they drew, so
    each order is one `take` over one contiguous slice and identity orders cost nothing; a second
    gather of 3·M-byte rows puts every block back in image layout.
    """
    count = len(flat)
    if count == 0:
        return
    segments = block_row_segments(image_size, block_size)
    blocks_per_image, per_image = segments.shape[0], segments.size
    row_bytes = 3 * block_size
    length = block_size * row_bytes
    total = count * blocks_per_image
    if move_index is None:
        work = np.arange(total)
    else:
        drawn = move_index.reshape(-1)
        work = np.argsort(drawn, kind="stable")
        ends = np.cumsum(np.bincount(drawn, minlength=len(element_orders)))
    image, block = np.divmod(work, blocks_per_image)
    index = segments[block_order[image, block]] + (image * per_image)[:, None]
    rows = np.take(
        flat.reshape(count * per_image, row_bytes), index.reshape(-1), axis=0, mode="wrap"
    )
    del index, image, block
    blocks = rows.reshape(total, length)
    if flip_values is not None:
        np.bitwise_xor(blocks, flip_values.reshape(-1)[work][:, None], out=blocks)
    if move_index is not None:
        identity = np.arange(length)
        start = 0
        for order, end in enumerate(ends):
            if end > start and not np.array_equal(element_orders[order], identity):
                reorder_elements(blocks[start:end], element_orders[order])
            start = end
    # Segment s of image n is row r of block j (from `destination`): the r-th row of the
    # worked block that holds (n, j).
    rank = np.empty_like(work)
    rank[work] = np.arange(total)
    destination = np.empty(per_image, dtype=np.int64)
    destination[segments.reshape(-1)] = np.arange(per_image)
    block_of, row_of = np.divmod(destination, block_size)
    back = rank.reshape(count, blocks_per_image)[:, block_of] * block_size + row_of
    np.take(
        rows, back.reshape(-1), axis=0, mode="wrap", out=out.reshape(count * per_image, row_bytes)
    )
