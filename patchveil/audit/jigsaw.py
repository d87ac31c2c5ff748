"""A ciphertext-only jigsaw attack on block scrambling, to measure what a block order hides.

The attacker holds ciphertexts only: for each image it rearranges the blocks, inside each window
the cipher keeps (`disposable` with `window=w`; the whole image without one), so that adjacent
edges match. Edge (dis)similarity predicts each border pixel from the two pixels beside it
(a linear extrapolation, as in the jigsaw-solver literature), and a greedy raster placement is
tried from every starting block, keeping the arrangement with the lowest total cost.

It is scored by whoever holds the plain images (the tenant auditing its own data), beside a
random arrangement of the same windows as the chance level: *direct* accuracy is the share of
block positions whose reconstructed block equals the plain block there; *neighbour* accuracy is
the share of adjacent block pairs (left–right, top–bottom) of the reconstruction that are also
adjacent that way in the plain image (a whole image reassembled but shifted scores high here and
low on direct accuracy). Pure numpy; no key is used or needed.
Applies to block-order-only ciphers (no in-block operation), where blocks arrive intact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from patchveil.errors import PatchveilError


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


def to_blocks(images: np.ndarray, block_size: int) -> np.ndarray:
    """[N, H, W, C] → [N, side, side, M, M, C]: the block grid of every image."""
    count, size = images.shape[0], images.shape[1]
    if images.ndim != 4 or images.shape[2] != size or size % block_size:
        raise PatchveilError(
            f"expected square images [N, H, W, C] with H divisible by {block_size}, got "
            f"{images.shape}"
        )
    side = size // block_size
    grid = images.reshape(count, side, block_size, side, block_size, images.shape[3])
    return grid.transpose(0, 1, 3, 2, 4, 5)


def from_blocks(grid: np.ndarray) -> np.ndarray:
    """The inverse of `to_blocks`."""
    count, side, _, block, _, channels = grid.shape
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(count, side * block, side * block, channels)


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


def solve_window(pieces: np.ndarray, side: int) -> np.ndarray:
    """An arrangement (raster order of piece numbers) of `side × side` pieces [P, M, M, C].

    Greedy: from every starting piece, fill the grid in raster order with the unused piece that
    best fits its left and upper neighbours; keep the cheapest of the P complete grids."""
    count = len(pieces)
    if count != side * side:
        raise PatchveilError(f"{count} pieces do not fill a {side}×{side} window")
    if count == 1:
        return np.zeros(1, dtype=np.int64)
    right, down = edge_costs(pieces)
    starts = np.arange(count)
    placed = np.empty((count, count), dtype=np.int64)  # [start, slot]
    placed[:, 0] = starts
    used = np.zeros((count, count), dtype=bool)
    used[starts, starts] = True
    total = np.zeros(count)
    for slot in range(1, count):
        row, column = divmod(slot, side)
        cost = np.zeros((count, count))
        if column:
            cost += right[placed[:, slot - 1]]
        if row:
            cost += down[placed[:, slot - side]]
        cost[used] = np.inf
        choice = np.argmin(cost, axis=1)
        total += cost[starts, choice]
        placed[:, slot] = choice
        used[starts, choice] = True
    return placed[int(np.argmin(total))]


def window_members(blocks_per_side: int, window: int) -> list[np.ndarray]:
    """Raster positions (row · side + column) of each window's blocks, windows in raster order."""
    per_side = blocks_per_side // window
    members = []
    for window_row in range(per_side):
        for window_column in range(per_side):
            rows = np.arange(window_row * window, (window_row + 1) * window)
            columns = np.arange(window_column * window, (window_column + 1) * window)
            members.append((rows[:, None] * blocks_per_side + columns[None, :]).reshape(-1))
    return members


def attack(ciphertexts: np.ndarray, block_size: int, window: int = 0) -> np.ndarray:
    """Reassemble each ciphertext's blocks inside each window; returns images like the input."""
    grid = to_blocks(ciphertexts, block_size)
    count, side = grid.shape[0], grid.shape[1]
    window = window or side
    if side % window:
        raise PatchveilError(f"window {window} does not divide the {side} blocks per side")
    flat = grid.reshape(count, side * side, *grid.shape[3:])
    out = flat.copy()
    for image in range(count):
        for positions in window_members(side, window):
            order = solve_window(flat[image, positions], window)
            out[image, positions] = flat[image, positions[order]]
    return from_blocks(out.reshape(grid.shape))


def random_arrangement(
    ciphertexts: np.ndarray, block_size: int, window: int, generator: np.random.Generator
) -> np.ndarray:
    """The chance level: every window's blocks in a random order."""
    grid = to_blocks(ciphertexts, block_size)
    count, side = grid.shape[0], grid.shape[1]
    flat = grid.reshape(count, side * side, *grid.shape[3:]).copy()
    for image in range(count):
        for positions in window_members(side, window or side):
            flat[image, positions] = flat[image, generator.permutation(positions)]
    return from_blocks(flat.reshape(grid.shape))


def direct_accuracy(candidates: np.ndarray, plain: np.ndarray, block_size: int) -> float:
    """Mean share of block positions where the candidate's block equals the plain block."""
    same = to_blocks(candidates, block_size) == to_blocks(plain, block_size)
    return float(same.all(axis=(3, 4, 5)).mean())


def neighbour_accuracy(candidates: np.ndarray, plain: np.ndarray, block_size: int) -> float:
    """Mean share of the candidate's adjacent block pairs that are adjacent so in the plain."""
    shares = []
    for candidate, original in zip(
        to_blocks(candidates, block_size), to_blocks(plain, block_size), strict=True
    ):
        found = 0
        total = 0
        for axis in (0, 1):  # top–bottom pairs, then left–right pairs
            first = np.moveaxis(original, axis, 0)
            pairs = {
                (a.tobytes(), b.tobytes())
                for row_a, row_b in itertools.pairwise(first)
                for a, b in zip(row_a, row_b, strict=True)
            }
            mine = np.moveaxis(candidate, axis, 0)
            for row_a, row_b in itertools.pairwise(mine):
                for a, b in zip(row_a, row_b, strict=True):
                    found += (a.tobytes(), b.tobytes()) in pairs
                    total += 1
        shares.append(found / total)
    return float(np.mean(shares))


def score(
    plain: np.ndarray, ciphertexts: np.ndarray, block_size: int, window: int = 0, seed: int = 0
) -> JigsawScore:
    """Run the attack on ciphertexts of `plain` and score it against a random arrangement."""
    if plain.shape != ciphertexts.shape:
        raise PatchveilError(f"plain {plain.shape} and ciphertexts {ciphertexts.shape} differ")
    side = plain.shape[1] // block_size
    reconstructed = attack(ciphertexts, block_size, window)
    chance = random_arrangement(ciphertexts, block_size, window, np.random.default_rng(seed))
    return JigsawScore(
        images=len(plain),
        blocks_per_window=(window or side) ** 2,
        attack_direct_accuracy=direct_accuracy(reconstructed, plain, block_size),
        chance_direct_accuracy=direct_accuracy(chance, plain, block_size),
        ciphertext_direct_accuracy=direct_accuracy(ciphertexts, plain, block_size),
        attack_neighbour_accuracy=neighbour_accuracy(reconstructed, plain, block_size),
        chance_neighbour_accuracy=neighbour_accuracy(chance, plain, block_size),
        ciphertext_neighbour_accuracy=neighbour_accuracy(ciphertexts, plain, block_size),
    )
