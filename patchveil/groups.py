"""Block geometry shared by the cipher and the model: the small groups that act inside a block,
and the windows a block order may be confined to.

A group is named by the operations that generate it, joined by "_" in this order: `np`
(negative–positive of the whole block), `cs` (a permutation of the colour channels), `rf` (one of
the 8 rotations/flips of the block), `px` (any permutation of the block's pixels, each pixel's
colour triple kept together); `none` is the trivial group. The per-image `disposable` cipher draws
one element per block; the `invariant` ViT is exactly invariant to the same group.

`px` contains every rotation/flip (they move pixels), so `rf` and `px` are never combined. With
`px` a block keeps only its multiset of colours: no edge inside it survives, so the edge-matching
jigsaw loses what it works with; `px` has (M²)! elements on M-pixel blocks, far too many to list,
so the cipher draws a pixel order per block from its keystream instead of a table entry, and the
model's patch embedding is a set function of the pixels (`SetPatchEmbed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPERATIONS = ("np", "cs", "rf", "px")
#: Groups listed element by element (|G| ≤ 96), then those with a pixel shuffle.
TABLE_GROUP_NAMES = ("none", "np", "cs", "rf", "np_cs", "np_rf", "cs_rf", "np_cs_rf")
PIXEL_GROUP_NAMES = ("px", "np_px", "cs_px", "np_cs_px")
GROUP_NAMES = (*TABLE_GROUP_NAMES, *PIXEL_GROUP_NAMES)


@dataclass(frozen=True)
class BlockGroup:
    negative_positive: bool
    colour_shuffle: bool
    rotation_flip: bool
    pixel_shuffle: bool = False

    @property
    def order(self) -> int:
        """The number of elements, the pixel shuffle left out (see `table_group`)."""
        return (
            (2 if self.negative_positive else 1)
            * (6 if self.colour_shuffle else 1)
            * (8 if self.rotation_flip else 1)
        )

    def log2_order(self, block_size: int) -> float:
        """log₂ of the number of elements on `block_size`-pixel blocks, pixel shuffle included."""
        pixels = math.lgamma(block_size * block_size + 1) / math.log(2) if self.pixel_shuffle else 0
        return math.log2(self.order) + pixels

    @property
    def table_group(self) -> str:
        """The name of the part listed element by element: the group without `px` (the pixel
        shuffle commutes with negative–positive and colour shuffles, so G = table part × S_pixels)."""
        parts = [
            name
            for name, present in zip(
                ("np", "cs", "rf"),
                (self.negative_positive, self.colour_shuffle, self.rotation_flip),
                strict=True,
            )
            if present
        ]
        return "_".join(parts) or "none"


def parse_group(name: str) -> BlockGroup:
    """The group a name denotes; an error names the accepted names."""
    if name not in GROUP_NAMES:
        raise ValueError(f"unknown block group {name!r}; choose one of {', '.join(GROUP_NAMES)}")
    parts = set() if name == "none" else set(name.split("_"))
    return BlockGroup("np" in parts, "cs" in parts, "rf" in parts, "px" in parts)


def pixel_colours(values: np.ndarray) -> np.ndarray:
    """[..., 3k] uint8 channel values (pixel by pixel) → [..., k] uint32: each pixel's colour as
    one number (r·2¹⁶ + g·2⁸ + b), so sorting a block's pixels sorts whole colour triples."""
    triples = values.reshape(*values.shape[:-1], -1, 3).astype(np.uint32)
    return (triples[..., 0] << 16) | (triples[..., 1] << 8) | triples[..., 2]


def window_of_blocks(blocks_per_side: int, window: int) -> np.ndarray:
    """The window number of every block position (raster order) when blocks stay inside their
    `window × window`-block window; windows are numbered in raster order too."""
    if window <= 0 or blocks_per_side % window:
        raise ValueError(f"window {window} does not divide the {blocks_per_side} blocks per side")
    rows = np.arange(blocks_per_side) // window
    per_side = blocks_per_side // window
    return (rows[:, None] * per_side + rows[None, :]).reshape(-1)
