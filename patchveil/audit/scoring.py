"""How well a reconstruction restores the plain images: the shared scores of every jigsaw attack.

Whoever holds the plain images (the tenant auditing its own data) scores each reconstruction by

- *direct* accuracy: the share of block positions whose reconstructed block equals the plain one;
- *neighbour* accuracy: the share of the reconstruction's adjacent block pairs (left–right,
  top–bottom) that are adjacent the same way in the plain image;
- *largest component*: the largest 4-connected set of blocks all placed correctly relative to
  each other (one common shift), as a share of all blocks (a reassembled but shifted picture
  scores high here and low on direct accuracy);
- *SSIM* and *PSNR* of the reconstructed picture against the plain one (uint8, data range 255;
  SSIM as `skimage.metrics.structural_similarity` with its defaults, averaged over channels).

Every score is the best over the whole-picture transforms no solver can resolve: with a per-block
group the same element on every block looks just as consistent (the picture turned or mirrored,
inverted, its channels swapped) and shows a person the same content. Blocks are compared by
their exact pixels, so duplicate blocks (flat sky) count wherever an equal block belongs. Pure
numpy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.groups import parse_group, pixel_colours

#: The PSNR of an exact reconstruction is infinite; it is reported as this (dB) so that means and
#: JSON stay finite.
PSNR_CAP = 100.0
SSIM_WINDOW = 7
MEASURES = ("direct", "neighbour", "largest_component", "ssim", "psnr")


def to_blocks(images: np.ndarray, block_size: int) -> np.ndarray:
    """[N, H, W, C] → [N, side, side, M, M, C]: the block grid of every image."""
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[1] % block_size:
        raise PatchveilError(
            f"expected square images [N, H, W, C] with H divisible by {block_size}, got "
            f"{images.shape}"
        )
    count, size = images.shape[0], images.shape[1]
    side = size // block_size
    grid = images.reshape(count, side, block_size, side, block_size, images.shape[3])
    return grid.transpose(0, 1, 3, 2, 4, 5)


def from_blocks(grid: np.ndarray) -> np.ndarray:
    """The inverse of `to_blocks`."""
    count, side, _, block, _, channels = grid.shape
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(count, side * block, side * block, channels)


def whole_image_versions(images: np.ndarray, group: str) -> list[np.ndarray]:
    """The images under every element of the group acting on the whole picture (the ambiguity no
    jigsaw can resolve): turned/mirrored (8) with `rf`, channels permuted (6) with `cs`, inverted
    (255 − x) with `np`; just the images with `none`."""
    parsed = parse_group(group)
    geometric = [images]
    # With a pixel shuffle a block has no inside orientation: its seams look the same every way
    # round, so a reassembly is only known up to a turn/mirror of the whole picture too.
    if parsed.rotation_flip or parsed.pixel_shuffle:
        geometric = [
            np.rot90(flipped, turns, axes=(1, 2))
            for flipped in (images, images[:, :, ::-1])
            for turns in range(4)
        ]
    colours = list(itertools.permutations(range(3))) if parsed.colour_shuffle else [(0, 1, 2)]
    out = []
    for version in geometric:
        for channels in colours:
            recoloured = np.ascontiguousarray(version[..., list(channels)])
            out.append(recoloured)
            if parsed.negative_positive:
                out.append(255 - recoloured)
    return out


def block_ids(
    candidates: np.ndarray, plain: np.ndarray, block_size: int, sort_pixels: bool = False
) -> tuple[np.ndarray, ...]:
    """Per image, a number for every block by its exact pixels (with `sort_pixels`: by its
    multiset of colour triples, for ciphers that shuffle pixels inside blocks): ([N, side, side]
    of the candidates, [N, side, side] of the plain images); equal blocks of one image share a
    number."""
    mine, original = to_blocks(candidates, block_size), to_blocks(plain, block_size)
    count, side = original.shape[:2]
    flat = np.concatenate(
        [mine.reshape(count, side * side, -1), original.reshape(count, side * side, -1)], axis=1
    )
    if sort_pixels:
        flat = np.sort(pixel_colours(flat), axis=-1)
    rows = np.ascontiguousarray(flat).view(np.dtype((np.void, flat.shape[2] * flat.itemsize)))
    ids = np.empty(rows.shape[:2], dtype=np.int64)
    for image in range(count):
        ids[image] = np.unique(rows[image, :, 0], return_inverse=True)[1]
    ids = ids.reshape(count, 2, side, side)
    return ids[:, 0], ids[:, 1]


def direct_accuracy(
    candidates: np.ndarray, plain: np.ndarray, block_size: int, sort_pixels: bool = False
) -> np.ndarray:
    """Per image, the share of block positions where the candidate's block is the plain one."""
    mine, original = block_ids(candidates, plain, block_size, sort_pixels)
    return (mine == original).mean(axis=(1, 2))


def neighbour_accuracy(
    candidates: np.ndarray, plain: np.ndarray, block_size: int, sort_pixels: bool = False
) -> np.ndarray:
    """Per image, the share of the candidate's adjacent block pairs adjacent so in the plain."""
    mine, original = block_ids(candidates, plain, block_size, sort_pixels)
    side = original.shape[1]
    base = 2 * side * side  # more than any block number
    shares = np.empty(len(mine))
    for image in range(len(mine)):
        found = total = 0
        for axis in (1, 0):  # top–bottom pairs, then left–right pairs
            a, b = original[image], mine[image]
            if axis == 0:
                a, b = a.T, b.T
            plain_pairs = (a[:-1] * base + a[1:]).ravel()
            my_pairs = (b[:-1] * base + b[1:]).ravel()
            found += int(np.isin(my_pairs, plain_pairs).sum())
            total += my_pairs.size
        shares[image] = found / total
    return shares


def largest_component(
    candidates: np.ndarray, plain: np.ndarray, block_size: int, sort_pixels: bool = False
) -> np.ndarray:
    """Per image, the largest 4-connected set of blocks that one common shift puts on their plain
    positions (blocks placed correctly relative to each other), as a share of all blocks."""
    mine, original = block_ids(candidates, plain, block_size, sort_pixels)
    side = original.shape[1]
    shifts = [(dr, dc) for dr in range(-side + 1, side) for dc in range(-side + 1, side)]
    shares = np.empty(len(mine))
    for image in range(len(mine)):
        # masks[s, r, c]: the block at (r, c) is the plain block at (r, c) + shift s.
        masks = np.zeros((len(shifts), side, side), dtype=bool)
        for number, (dr, dc) in enumerate(shifts):
            rows = slice(max(0, -dr), min(side, side - dr))
            columns = slice(max(0, -dc), min(side, side - dc))
            moved = original[image][
                rows.start + dr : rows.stop + dr, columns.start + dc : columns.stop + dc
            ]
            masks[number, rows, columns] = mine[image][rows, columns] == moved
        shares[image] = largest_connected_set(masks).max() / (side * side)
    return shares


def largest_connected_set(masks: np.ndarray) -> np.ndarray:
    """[S, H, W] booleans → [S]: the size of the largest 4-connected set of True cells of each."""
    count, height, width = masks.shape
    big = height * width
    labels = np.where(masks, np.arange(big).reshape(1, height, width), big)
    while True:  # every cell takes the smallest label among itself and its True neighbours
        smallest = labels.copy()
        smallest[:, 1:] = np.minimum(smallest[:, 1:], labels[:, :-1])
        smallest[:, :-1] = np.minimum(smallest[:, :-1], labels[:, 1:])
        smallest[:, :, 1:] = np.minimum(smallest[:, :, 1:], labels[:, :, :-1])
        smallest[:, :, :-1] = np.minimum(smallest[:, :, :-1], labels[:, :, 1:])
        smallest = np.where(masks, smallest, big)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    sizes = np.zeros(count, dtype=np.int64)
    for number in range(count):
        present = labels[number][masks[number]]
        if present.size:
            sizes[number] = np.bincount(present).max()
    return sizes


def block_means(images: np.ndarray, block_size: int) -> np.ndarray:
    """Every block filled with its mean colour (rounded), images like the input."""
    grid = to_blocks(images, block_size).astype(np.float64)
    means = grid.mean(axis=(3, 4), keepdims=True)
    return from_blocks(np.broadcast_to(np.rint(means), grid.shape).astype(np.uint8))


def box_mean(images: np.ndarray, window: int) -> np.ndarray:
    """[N, H, W, C] → [N, H−w+1, W−w+1, C]: the mean over every full w×w window."""
    summed = np.cumsum(np.cumsum(images, axis=1), axis=2)
    summed = np.pad(summed, ((0, 0), (1, 0), (1, 0), (0, 0)))
    total = (
        summed[:, window:, window:]
        - summed[:, :-window, window:]
        - summed[:, window:, :-window]
        + summed[:, :-window, :-window]
    )
    return total / (window * window)


def ssim(candidates: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Per image, the mean structural similarity over channels, as skimage.metrics'
    `structural_similarity(..., data_range=255, channel_axis=-1)` computes it (7×7 uniform
    window, sample covariance, K1 = 0.01, K2 = 0.03, borders of 3 pixels left out)."""
    x = candidates.astype(np.float64)
    y = plain.astype(np.float64)
    window = SSIM_WINDOW
    normalise = window * window / (window * window - 1)
    mean_x, mean_y = box_mean(x, window), box_mean(y, window)
    var_x = normalise * (box_mean(x * x, window) - mean_x * mean_x)
    var_y = normalise * (box_mean(y * y, window) - mean_y * mean_y)
    covariance = normalise * (box_mean(x * y, window) - mean_x * mean_y)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(axis=(1, 2, 3))


def psnr(candidates: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Per image, the peak signal-to-noise ratio in dB (data range 255), at most `PSNR_CAP`."""
    error = ((candidates.astype(np.float64) - plain.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        value = 10 * np.log10(255.0**2 / error)
    return np.minimum(value, PSNR_CAP)


@dataclass(frozen=True)
class Summary:
    """Mean, median and quartiles of one score over images."""

    mean: float
    median: float
    lower_quartile: float
    upper_quartile: float

    @classmethod
    def of(cls, values: tuple[float, ...]) -> Summary:
        array = np.asarray(values, dtype=np.float64)
        lower, median, upper = np.percentile(array, [25, 50, 75])
        return cls(float(array.mean()), float(median), float(lower), float(upper))


@dataclass(frozen=True)
class ReconstructionScore:
    """Per-image scores of reconstructions (each the best over the whole-picture transforms of
    `group`), in image order."""

    images: int
    block_size: int
    group: str
    direct: tuple[float, ...]
    neighbour: tuple[float, ...]
    largest_component: tuple[float, ...]
    ssim: tuple[float, ...]
    psnr: tuple[float, ...]

    def summary(self, measure: str) -> Summary:
        """Mean, median and quartiles of one of `MEASURES`."""
        if measure not in MEASURES:
            raise PatchveilError(f"unknown score {measure!r}; choose one of {', '.join(MEASURES)}")
        return Summary.of(getattr(self, measure))

    def to_json(self) -> dict[str, Any]:
        """Plain numbers: the settings, a summary per score and the per-image values."""
        return {
            "images": self.images,
            "block_size": self.block_size,
            "group": self.group,
            "summary": {measure: vars(self.summary(measure)) for measure in MEASURES},
            "per_image": {measure: list(getattr(self, measure)) for measure in MEASURES},
        }


def score_reconstructions(
    plain: np.ndarray, reconstructed: np.ndarray, block_size: int, group: str = "none"
) -> ReconstructionScore:
    """Score reconstructions of `plain` ([N, H, W, C] uint8 each): every measure per image, each
    at the whole-picture transform of `group` that suits it best."""
    if plain.shape != reconstructed.shape:
        raise PatchveilError(
            f"plain {plain.shape} and reconstructions {reconstructed.shape} differ"
        )
    sort_pixels = parse_group(group).pixel_shuffle

    def rendered(version: np.ndarray) -> list[np.ndarray]:
        # A block whose pixels are shuffled is also drawn as its mean colour (the attacker's
        # best guess at its inside); the better-scoring drawing counts.
        return [version, block_means(version, block_size)] if sort_pixels else [version]

    measures = {
        "direct": lambda version: direct_accuracy(version, plain, block_size, sort_pixels),
        "neighbour": lambda version: neighbour_accuracy(version, plain, block_size, sort_pixels),
        "largest_component": lambda version: largest_component(
            version, plain, block_size, sort_pixels
        ),
        "ssim": lambda version: np.max([ssim(drawn, plain) for drawn in rendered(version)], 0),
        "psnr": lambda version: np.max([psnr(drawn, plain) for drawn in rendered(version)], 0),
    }
    versions = whole_image_versions(reconstructed, group)
    best = {
        name: np.max([measure(version) for version in versions], axis=0)
        for name, measure in measures.items()
    }
    return ReconstructionScore(
        images=len(plain),
        block_size=block_size,
        group=group,
        **{name: tuple(float(value) for value in values) for name, values in best.items()},
    )


#: The audit's photographs: scikit-image's colour sample photographs that ship inside the package
#: (no download; the name of the `skimage.data` loader, and for stereo pairs the left image),
#: then matplotlib's sample grace_hopper.
PHOTOGRAPH_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "stereo_motorcycle",
    "retina",
    "rocket",
    "grace_hopper",
)


def photographs(size: int = 224, names: tuple[str, ...] = PHOTOGRAPH_NAMES) -> np.ndarray:
    """[N, size, size, 3] uint8: each photograph of `names` centre-cropped to a square and
    resized (Lanczos) to `size` pixels, built offline from the files scikit-image and matplotlib
    ship (at 224 px: the 196 16-pixel blocks of the ViT-B/16 geometry)."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    out = []
    for name in names:
        if name == "grace_hopper":
            with cbook.get_sample_data("grace_hopper.jpg") as handle:
                image = np.asarray(Image.open(handle).convert("RGB"))
        else:
            image = getattr(data, name)()
            image = image[0] if isinstance(image, tuple) else image  # a stereo pair: the left
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = Image.fromarray(image[top : top + side, left : left + side, :3])
        out.append(np.asarray(square.resize((size, size), Image.LANCZOS)))
    return np.stack(out)
