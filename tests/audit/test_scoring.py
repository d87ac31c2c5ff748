"""The shared scores: exact on known cases, forgiving only the transforms no solver can resolve."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from patchveil.audit.scoring import (
    PSNR_CAP,
    direct_accuracy,
    from_blocks,
    largest_component,
    neighbour_accuracy,
    psnr,
    score_reconstructions,
    ssim,
    to_blocks,
)
from patchveil.errors import PatchveilError


def random_images(count: int = 2, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_a_perfect_reconstruction_scores_full_marks() -> None:
    plain = random_images()
    result = score_reconstructions(plain, plain.copy(), 4)
    for measure in ("direct", "neighbour", "largest_component", "ssim"):
        assert getattr(result, measure) == (1.0, 1.0)
    assert result.psnr == (PSNR_CAP, PSNR_CAP)


def test_a_shifted_picture_keeps_its_largest_component_and_neighbours() -> None:
    plain = random_images(1)
    grid = to_blocks(plain, 4)
    shifted = from_blocks(np.roll(grid, 1, axis=2))  # every block one column to the right
    assert direct_accuracy(shifted, plain, 4)[0] == 0.0
    # 3 of 4 columns keep their relative placement; 4·2 of 4·3 left–right pairs and all 12
    # top–bottom pairs are adjacent so in the plain image.
    assert largest_component(shifted, plain, 4)[0] == pytest.approx(12 / 16)
    assert neighbour_accuracy(shifted, plain, 4)[0] == pytest.approx(20 / 24)


def test_two_swapped_blocks() -> None:
    plain = random_images(1)
    grid = to_blocks(plain, 4).copy()
    grid[0, 0, 0], grid[0, 3, 3] = grid[0, 3, 3].copy(), grid[0, 0, 0].copy()
    swapped = from_blocks(grid)
    assert direct_accuracy(swapped, plain, 4)[0] == pytest.approx(14 / 16)
    assert neighbour_accuracy(swapped, plain, 4)[0] == pytest.approx(20 / 24)
    assert largest_component(swapped, plain, 4)[0] == pytest.approx(14 / 16)


def test_duplicate_blocks_count_wherever_an_equal_block_belongs() -> None:
    plain = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    assert direct_accuracy(plain[:, ::-1], plain, 4)[0] == 1.0


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """skimage's defaults written out window by window (7×7, sample covariance)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for channel in range(x.shape[2]):
        for row in range(x.shape[0] - 6):
            for column in range(x.shape[1] - 6):
                a = x[row : row + 7, column : column + 7, channel].ravel()
                b = y[row : row + 7, column : column + 7, channel].ravel()
                covariance = np.cov(a, b)
                values.append(
                    (2 * a.mean() * b.mean() + c1)
                    * (2 * covariance[0, 1] + c2)
                    / (
                        (a.mean() ** 2 + b.mean() ** 2 + c1)
                        * (covariance[0, 0] + covariance[1, 1] + c2)
                    )
                )
    return float(np.mean(values))


def test_ssim_and_psnr_match_their_definitions() -> None:
    plain, other = random_images(1, 12, seed=1), random_images(1, 12, seed=2)
    noisy = np.clip(
        plain.astype(int) + np.random.default_rng(3).integers(-20, 21, plain.shape), 0, 255
    ).astype(np.uint8)
    for candidate in (other, noisy):
        assert ssim(candidate, plain)[0] == pytest.approx(reference_ssim(candidate[0], plain[0]))
    error = ((noisy.astype(float) - plain) ** 2).mean()
    assert psnr(noisy, plain)[0] == pytest.approx(10 * np.log10(255**2 / error))


def test_skimage_agrees_where_installed() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    plain, other = random_images(1, 32, seed=4), random_images(1, 32, seed=5)
    expected = metrics.structural_similarity(other[0], plain[0], data_range=255, channel_axis=-1)
    assert ssim(other, plain)[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("group", "transform"),
    [
        ("rf", lambda images: np.rot90(images, 1, axes=(1, 2))),
        ("rf", lambda images: images[:, :, ::-1]),
        ("np", lambda images: 255 - images),
        ("cs", lambda images: images[..., [2, 0, 1]]),
        ("np_cs_rf", lambda images: 255 - np.rot90(images[..., [1, 0, 2]], 3, axes=(1, 2))),
    ],
)
def test_a_whole_picture_transform_is_forgiven_only_where_the_group_makes_it_ambiguous(
    group: str, transform: Callable[[np.ndarray], np.ndarray]
) -> None:
    plain = random_images()
    reconstructed = np.ascontiguousarray(transform(plain))
    forgiven = score_reconstructions(plain, reconstructed, 4, group)
    for measure in ("direct", "neighbour", "largest_component", "ssim"):
        assert getattr(forgiven, measure) == (1.0, 1.0)
    assert forgiven.psnr == (PSNR_CAP, PSNR_CAP)
    strict = score_reconstructions(plain, reconstructed, 4, "none")
    assert max(strict.direct) < 0.2
    assert max(strict.ssim) < 0.2


def shuffle_pixels_in_blocks(images: np.ndarray, block_size: int, seed: int) -> np.ndarray:
    """Each block's pixels in a random order of its own (what a `px` group does to a block)."""
    grid = to_blocks(images, block_size)
    count, side = grid.shape[:2]
    pixels = grid.reshape(count, side, side, block_size * block_size, 3).copy()
    generator = np.random.default_rng(seed)
    for index in np.ndindex(count, side, side):
        pixels[index] = pixels[index][generator.permutation(block_size * block_size)]
    return from_blocks(pixels.reshape(grid.shape))


def test_pixel_shuffled_blocks_count_as_their_block_and_a_turned_picture_is_forgiven() -> None:
    """With `px` a block is known by its colours (their order is the key's): a reassembly in
    the plain order scores full marks whatever the pixel orders, and so does one turned as a
    whole (a pixel-shuffled jigsaw has no orientation); without `px` neither would."""
    plain = random_images()
    shuffled = shuffle_pixels_in_blocks(plain, 4, seed=1)
    for candidate in (shuffled, np.ascontiguousarray(np.rot90(shuffled, 1, axes=(1, 2)))):
        scored = score_reconstructions(plain, candidate, 4, "px")
        assert scored.direct == (1.0, 1.0) and scored.neighbour == (1.0, 1.0)
        assert max(score_reconstructions(plain, candidate, 4, "none").direct) < 0.2
    # The attacker may also draw each block as its mean colour: SSIM is the better drawing's.
    scored = score_reconstructions(plain, shuffled, 4, "px")
    assert min(scored.ssim) >= max(ssim(shuffled, plain)) - 1e-12


def test_summaries_and_json() -> None:
    plain = random_images(4)
    reconstructed = plain.copy()
    reconstructed[0] = random_images(1, seed=9)[0]
    result = score_reconstructions(plain, reconstructed, 4)
    summary = result.summary("direct")
    assert summary.median == 1.0
    assert summary.mean == pytest.approx(np.mean(result.direct))
    assert summary.lower_quartile <= summary.median <= summary.upper_quartile
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["per_image"]["direct"][1:] == [1.0, 1.0, 1.0]
    assert set(payload["summary"]) == {"direct", "neighbour", "largest_component", "ssim", "psnr"}
    with pytest.raises(PatchveilError, match="unknown score"):
        result.summary("accuracy")


def test_bad_input_is_refused() -> None:
    with pytest.raises(PatchveilError, match="differ"):
        score_reconstructions(random_images(1), random_images(2), 4)
    with pytest.raises(PatchveilError, match="divisible by 5"):
        score_reconstructions(random_images(1), random_images(1), 5)


def test_the_photographs_are_built_offline_from_the_packages() -> None:
    from patchveil.audit.scoring import PHOTOGRAPH_NAMES, photographs

    images = photographs(32, ("chelsea", "stereo_motorcycle", "grace_hopper"))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert len(set(PHOTOGRAPH_NAMES)) == len(PHOTOGRAPH_NAMES) == 9
    assert images.std(axis=(1, 2, 3)).min() > 10  # pictures, not blank frames
