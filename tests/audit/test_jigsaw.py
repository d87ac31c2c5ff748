"""The jigsaw attack: it solves what is easy, it is scored honestly, and it needs no key."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.audit.jigsaw import attack, edge_costs, from_blocks, score, solve_window, to_blocks
from patchveil.errors import PatchveilError
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key


def smooth_images(count: int, size: int = 16) -> np.ndarray:
    """Distinct smooth colour ramps: every seam is predictable, so a jigsaw solver should win."""
    rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = []
    for n in range(count):
        red = 10 + 7 * rows + 3 * n
        green = 20 + 5 * columns + 2 * n
        blue = 30 + 3 * rows + 4 * columns
        images.append(np.stack([red, green, blue], axis=-1))
    return np.clip(np.array(images), 0, 255).astype(np.uint8)


def encrypt(images: np.ndarray, window: int, block_size: int = 4) -> np.ndarray:
    spec = CipherSpec(
        "disposable", block_size, images.shape[1], (("group", "none"), ("window", window))
    )
    return create_cipher(Key.generate("auditor", spec)).encrypt(images, np.arange(len(images)))


def test_blocks_round_trip() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    grid = to_blocks(images, 4)
    assert grid.shape == (2, 4, 4, 4, 4, 3)
    assert np.array_equal(grid[0, 1, 2], images[0, 4:8, 8:12])
    assert np.array_equal(from_blocks(grid), images)


def test_edge_costs_prefer_the_true_neighbour() -> None:
    grid = to_blocks(smooth_images(1), 4)[0].reshape(16, 4, 4, 3)
    right, down = edge_costs(grid)
    assert np.argmin(right[0]) == 1  # block (0,0) continues into (0,1)
    assert np.argmin(down[0]) == 4  # and into (1,0) below
    assert np.isinf(np.diag(right)).all()


@pytest.mark.parametrize("window", [2, 4])
def test_smooth_images_are_reassembled_exactly(window: int) -> None:
    plain = smooth_images(3)
    ciphertexts = encrypt(plain, window)
    assert not np.array_equal(ciphertexts, plain)
    assert np.array_equal(attack(ciphertexts, 4, window), plain)
    result = score(plain, ciphertexts, 4, window)
    assert result.attack_direct_accuracy == 1.0
    assert result.attack_neighbour_accuracy == 1.0
    assert result.chance_direct_accuracy < 1.0
    assert result.blocks_per_window == window * window


def test_noise_is_not_reassembled_beyond_chance() -> None:
    plain = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    result = score(plain, encrypt(plain, 0), 4)
    assert result.attack_direct_accuracy < 0.3
    assert result.ciphertext_direct_accuracy < 0.3


def test_unscrambled_images_score_one_for_the_ciphertext() -> None:
    plain = smooth_images(2)
    assert score(plain, plain, 4).ciphertext_direct_accuracy == 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(PatchveilError, match="do not fill"):
        solve_window(np.zeros((3, 4, 4, 3)), 2)
    with pytest.raises(PatchveilError, match="divisible by 4"):
        attack(np.zeros((1, 10, 10, 3), dtype=np.uint8), 4)
    with pytest.raises(PatchveilError, match="does not divide"):
        attack(np.zeros((1, 16, 16, 3), dtype=np.uint8), 4, window=3)
    with pytest.raises(PatchveilError, match="differ"):
        score(smooth_images(1), smooth_images(2), 4)


@pytest.mark.parametrize("group", ["rf", "np_cs"])
def test_a_group_element_per_block_is_undone_on_smooth_images(group: str) -> None:
    plain = smooth_images(2)
    spec = CipherSpec("disposable", 4, 16, (("group", group),))
    ciphertexts = create_cipher(Key.generate("auditor", spec)).encrypt(plain, np.arange(2))
    result = score(plain, ciphertexts, 4, group=group)
    # Up to one element on the whole image (a rotated or recoloured picture shows the same).
    assert result.attack_direct_accuracy == 1.0
    assert result.chance_direct_accuracy < 0.2
