"""Block geometry shared by the cipher and the model: the small groups that act inside a block,
and the windows a block order may be confined to.

A group is named by the operations that generate it, joined by "_" in this order: `np`
(negative–positive of the whole block), `cs` (a permutation of the colour channels), `rf` (one of
the 8 rotations/flips of the block); `none` is the trivial group. The per-image `disposable`
cipher draws one element per block; the `invariant` ViT is exactly invariant to the same group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPERATIONS = ("np", "cs", "rf")
GROUP_NAMES = ("none", "np", "cs", "rf", "np_cs", "np_rf", "cs_rf", "np_cs_rf")


@dataclass(frozen=True)
class BlockGroup:
    negative_positive: bool
    colour_shuffle: bool
    rotation_flip: bool

    @property
    def order(self) -> int:
        return (
            (2 if self.negative_positive else 1)
            * (6 if self.colour_shuffle else 1)
            * (8 if self.rotation_flip else 1)
        )


def parse_group(name: str) -> BlockGroup:
    """The group a name denotes; an error names the accepted names."""
    if name not in GROUP_NAMES:
        raise ValueError(f"unknown block group {name!r}; choose one of {', '.join(GROUP_NAMES)}")
    parts = set() if name == "none" else set(name.split("_"))
    return BlockGroup("np" in parts, "cs" in parts, "rf" in parts)


def window_of_blocks(blocks_per_side: int, window: int) -> np.ndarray:
    """The window number of every block position (raster order) when blocks stay inside their
    `window × window`-block window; windows are numbered in raster order too."""
    if window <= 0 or blocks_per_side % window:
        raise ValueError(f"window {window} does not divide the {blocks_per_side} blocks per side")
    rows = np.arange(blocks_per_side) // window
    per_side = blocks_per_side // window
    return (rows[:, None] * per_side + rows[None, :]).reshape(-1)
