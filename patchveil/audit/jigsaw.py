"""A ciphertext-only jigsaw attack on block scrambling, to measure what a block order hides.

The attacker holds ciphertexts only: for each image it rearranges the blocks, inside each window
the cipher keeps (`disposable` with `window=w`; the whole image without one), so that adjacent
edges match. Edge (dis)similarity predicts each border pixel from the two pixels beside it
(a linear extrapolation, as in the jigsaw-solver literature), and a greedy raster placement is
tried from every starting block, keeping the arrangement with the lowest total cost.

This is the weak baseline; `patchveil.audit.jigsaw_mgc` is the strong solver. It is scored by
whoever holds the plain images (the tenant auditing its own data) with the shared scores of
`patchveil.audit.scoring` (direct and neighbour accuracy), beside a random arrangement of the
same windows as the chance level. Pure numpy; no key is used or needed.
With a per-block group (`disposable`'s `group`: negative–positive, colour shuffle, rotation/flip)
the attacker knows the group but not each block's element, so it tries every element on every
block (the true plain block is one of them) and places (block, element) pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from patchveil.audit.scoring import (
    direct_accuracy,
    from_blocks,
    neighbour_accuracy,
    score_reconstructions,
    to_blocks,
    whole_image_versions,
)
from patchveil.errors import PatchveilError
from patchveil.groups import window_of_blocks

__all__ = [
    "JigsawScore",
    "attack",
    "direct_accuracy",
    "edge_costs",
    "from_blocks",
    "group_versions",
    "neighbour_accuracy",
    "random_arrangement",
    "score",
    "solve_window",
    "to_blocks",
    "whole_image_versions",
    "window_members",
]


@dataclass(frozen=True)
class JigsawScore:
    """Mean share of blocks put back in their place, by the attack and by chance."""

    images: int
    blocks_per_window: int
    attack_direct_accuracy: float
    chance_direct_accuracy: float
    ciphertext_direct_accuracy: float
    attack_neighbour_accuracy: float
    chance_neighbour_accuracy: float
    ciphertext_neighbour_accuracy: float


def edge_costs(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, down) costs [P, P] of placing piece j right of / below piece i.

    Each side's border is predicted from the other piece's two pixels nearest the seam (linear
    extrapolation), in both directions; the cost is the squared prediction error."""
    x = pieces.astype(np.float64)

    def cost(near_a: np.ndarray, inner_a: np.ndarray, near_b: np.ndarray, inner_b: np.ndarray):
        # a's border continued across the seam should look like b's border, and back.
        forward = (2 * near_a - inner_a)[:, None] - near_b[None]
        backward = (2 * near_b - inner_b)[None] - near_a[:, None]
        axes = tuple(range(2, forward.ndim))
        return (forward**2).sum(axis=axes) + (backward**2).sum(axis=axes)

    right = cost(x[:, :, -1], x[:, :, -2], x[:, :, 0], x[:, :, 1])
    down = cost(x[:, -1], x[:, -2], x[:, 0], x[:, 1])
    for matrix in (right, down):
        np.fill_diagonal(matrix, np.inf)
    return right, down


MAX_STARTS = 256


def solve_window(pieces: np.ndarray, side: int) -> np.ndarray:
    """An arrangement of `side × side` pieces: [P, M, M, C] → piece numbers in raster order;
    [P, V, M, M, C] (V candidate versions of each piece) → (piece · V + version) numbers.

    Greedy: from each starting state, fill the grid in raster order with the unused piece (in
    its best-fitting version) that best fits its left and upper neighbours; keep the cheapest
    complete grid. Every state starts when there are at most `MAX_STARTS`, else an even spread."""
    if pieces.ndim == 4:
        pieces = pieces[:, None]
    count, versions = pieces.shape[:2]
    if count != side * side:
        raise PatchveilError(f"{count} pieces do not fill a {side}×{side} window")
    states = count * versions
    right, down = edge_costs(pieces.reshape(states, *pieces.shape[2:]))
    piece_of = np.arange(states) // versions
    # A piece never sits beside itself, in any version.
    same = piece_of[:, None] == piece_of[None, :]
    right[same] = np.inf
    down[same] = np.inf
    starts = np.unique(np.linspace(0, states - 1, min(states, MAX_STARTS)).round().astype(int))
    runs = np.arange(len(starts))
    placed = np.empty((len(starts), count), dtype=np.int64)  # [run, slot] → state
    placed[:, 0] = starts
    used = np.zeros((len(starts), count), dtype=bool)
    used[runs, piece_of[starts]] = True
    total = np.zeros(len(starts))
    for slot in range(1, count):
        row, column = divmod(slot, side)
        cost = np.zeros((len(starts), states))
        if column:
            cost += right[placed[:, slot - 1]]
        if row:
            cost += down[placed[:, slot - side]]
        cost[used[:, piece_of]] = np.inf
        choice = np.argmin(cost, axis=1)
        total += cost[runs, choice]
        placed[:, slot] = choice
        used[runs, piece_of[choice]] = True
    return placed[int(np.argmin(total))]


def group_versions(pieces: np.ndarray, group: str) -> np.ndarray:
    """[P, M, M, C] → [P, |G|, M, M, C]: every element of a block group applied to every piece."""
    from patchveil.tenants.ciphers.disposable import group_tables

    block_size = pieces.shape[1]
    orders, flips = group_tables(group, block_size)
    flat = pieces.reshape(len(pieces), -1)
    versions = flat[:, orders] ^ flips[None]
    return versions.reshape(len(pieces), len(orders), *pieces.shape[1:])


def window_members(blocks_per_side: int, window: int) -> list[np.ndarray]:
    """Raster positions (row · side + column) of each window's blocks, windows in raster order."""
    windows = window_of_blocks(blocks_per_side, window)
    return [np.flatnonzero(windows == number) for number in range(windows.max() + 1)]


def solve_each_window(
    ciphertexts: np.ndarray,
    block_size: int,
    window: int,
    place: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """Cut every ciphertext into its puzzles (one per `window`×`window`-block window, the whole
    image for 0) and put `place(pieces, side)`'s arrangement of each back in its window."""
    grid = to_blocks(ciphertexts, block_size)
    count, side = grid.shape[0], grid.shape[1]
    window = window or side
    if side % window:
        raise PatchveilError(f"window {window} does not divide the {side} blocks per side")
    flat = grid.reshape(count, side * side, *grid.shape[3:])
    out = flat.copy()
    for image in range(count):
        for positions in window_members(side, window):
            out[image, positions] = place(flat[image, positions], window)
    return from_blocks(out.reshape(grid.shape))


def attack(
    ciphertexts: np.ndarray, block_size: int, window: int = 0, group: str = "none"
) -> np.ndarray:
    """Reassemble each ciphertext's blocks inside each window (undoing the per-block group
    element it guesses); returns images like the input."""

    def place(pieces: np.ndarray, side: int) -> np.ndarray:
        if group == "none":
            return pieces[solve_window(pieces, side)]
        versions = group_versions(pieces, group)
        return versions.reshape(-1, *pieces.shape[1:])[solve_window(versions, side)]

    return solve_each_window(ciphertexts, block_size, window, place)


def random_arrangement(
    ciphertexts: np.ndarray,
    block_size: int,
    window: int,
    generator: np.random.Generator,
    group: str = "none",
) -> np.ndarray:
    """The chance level: every window's blocks in a random order (each in a random version)."""
    grid = to_blocks(ciphertexts, block_size)
    count, side = grid.shape[0], grid.shape[1]
    flat = grid.reshape(count, side * side, *grid.shape[3:]).copy()
    for image in range(count):
        for positions in window_members(side, window or side):
            flat[image, positions] = flat[image, generator.permutation(positions)]
        if group != "none":
            versions = group_versions(flat[image], group)
            pick = generator.integers(0, versions.shape[1], len(versions))
            flat[image] = versions[np.arange(len(versions)), pick]
    return from_blocks(flat.reshape(grid.shape))


def score(
    plain: np.ndarray,
    ciphertexts: np.ndarray,
    block_size: int,
    window: int = 0,
    seed: int = 0,
    group: str = "none",
) -> JigsawScore:
    """Run the attack on ciphertexts of `plain` and score it against a random arrangement.

    With a group, each image is scored at the whole-image group element that suits it best (for
    the attack, the chance level and the ciphertext alike); with a group *and* windows, each
    window's own such ambiguity is not forgiven, so the scores are then lower bounds."""
    if plain.shape != ciphertexts.shape:
        raise PatchveilError(f"plain {plain.shape} and ciphertexts {ciphertexts.shape} differ")
    side = plain.shape[1] // block_size
    reconstructed = attack(ciphertexts, block_size, window, group)
    chance = random_arrangement(ciphertexts, block_size, window, np.random.default_rng(seed), group)
    attacked, chanced, unsolved = (
        score_reconstructions(plain, images, block_size, group)
        for images in (reconstructed, chance, ciphertexts)
    )
    return JigsawScore(
        images=len(plain),
        blocks_per_window=(window or side) ** 2,
        attack_direct_accuracy=float(np.mean(attacked.direct)),
        chance_direct_accuracy=float(np.mean(chanced.direct)),
        ciphertext_direct_accuracy=float(np.mean(unsolved.direct)),
        attack_neighbour_accuracy=float(np.mean(attacked.neighbour)),
        chance_neighbour_accuracy=float(np.mean(chanced.neighbour)),
        ciphertext_neighbour_accuracy=float(np.mean(unsolved.neighbour)),
    )
