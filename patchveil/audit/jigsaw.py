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
With a per-block group (`disposable`'s `group`: negative–positive, colour shuffle, rotation/flip)
the attacker knows the group but not each block's element, so it tries every element on every
block (the true plain block is one of them) and places (block, element) pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.groups import window_of_blocks


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


def attack(
    ciphertexts: np.ndarray, block_size: int, window: int = 0, group: str = "none"
) -> np.ndarray:
    """Reassemble each ciphertext's blocks inside each window (undoing the per-block group
    element it guesses); returns images like the input."""
    grid = to_blocks(ciphertexts, block_size)
    count, side = grid.shape[0], grid.shape[1]
    window = window or side
    if side % window:
        raise PatchveilError(f"window {window} does not divide the {side} blocks per side")
    flat = grid.reshape(count, side * side, *grid.shape[3:])
    out = flat.copy()
    for image in range(count):
        for positions in window_members(side, window):
            pieces = flat[image, positions]
            if group == "none":
                out[image, positions] = pieces[solve_window(pieces, window)]
            else:
                versions = group_versions(pieces, group)
                states = solve_window(versions, window)
                out[image, positions] = versions.reshape(-1, *pieces.shape[1:])[states]
    return from_blocks(out.reshape(grid.shape))


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


def direct_accuracy(candidates: np.ndarray, plain: np.ndarray, block_size: int) -> np.ndarray:
    """Per image, the share of block positions where the candidate's block is the plain one."""
    same = to_blocks(candidates, block_size) == to_blocks(plain, block_size)
    return same.all(axis=(3, 4, 5)).mean(axis=(1, 2))


def neighbour_accuracy(candidates: np.ndarray, plain: np.ndarray, block_size: int) -> np.ndarray:
    """Per image, the share of the candidate's adjacent block pairs adjacent so in the plain."""
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
    return np.array(shares)


def whole_image_versions(images: np.ndarray, group: str) -> list[np.ndarray]:
    """The images under every element of the group acting on the whole image (the ambiguity no
    jigsaw can resolve: the same element on every block looks just as consistent — a negative,
    a colour swap, a rotated or mirrored image — and shows a person the same content)."""
    from patchveil.groups import parse_group

    parsed = parse_group(group)
    geometric = [images]
    if parsed.rotation_flip:
        geometric = [
            np.rot90(flipped, turns, axes=(1, 2))
            for flipped in (images, images[:, :, ::-1])
            for turns in range(4)
        ]
    colours = [(0, 1, 2)]
    if parsed.colour_shuffle:
        colours = list(itertools.permutations(range(3)))
    out = []
    for version in geometric:
        for channels in colours:
            recoloured = np.ascontiguousarray(version[..., list(channels)])
            out.append(recoloured)
            if parsed.negative_positive:
                out.append(255 - recoloured)
    return out


def best_over_whole_image_versions(
    measure: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    candidates: np.ndarray,
    plain: np.ndarray,
    block_size: int,
    group: str,
) -> float:
    """Mean over images of the measure at the best whole-image group element for each image."""
    per_version = [
        measure(version, plain, block_size) for version in whole_image_versions(candidates, group)
    ]
    return float(np.max(per_version, axis=0).mean())


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

    def best(measure: Callable[[np.ndarray, np.ndarray, int], np.ndarray], images: np.ndarray):
        return best_over_whole_image_versions(measure, images, plain, block_size, group)

    return JigsawScore(
        images=len(plain),
        blocks_per_window=(window or side) ** 2,
        attack_direct_accuracy=best(direct_accuracy, reconstructed),
        chance_direct_accuracy=best(direct_accuracy, chance),
        ciphertext_direct_accuracy=best(direct_accuracy, ciphertexts),
        attack_neighbour_accuracy=best(neighbour_accuracy, reconstructed),
        chance_neighbour_accuracy=best(neighbour_accuracy, chance),
        ciphertext_neighbour_accuracy=best(neighbour_accuracy, ciphertexts),
    )
