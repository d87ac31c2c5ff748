"""The strong jigsaw solver: it reassembles what it must, from ciphertexts alone."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.audit.jigsaw_mgc import piece_group, reconstruct, set_seam_parts, solve
from patchveil.audit.scoring import photographs as sample_photographs
from patchveil.audit.scoring import score_reconstructions, to_blocks
from patchveil.errors import PatchveilError
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key

#: Smooth ones among the audit's photographs.
SMOOTH = ("chelsea", "coffee", "rocket", "grace_hopper")


def photographs(size: int, count: int) -> np.ndarray:
    """Smooth sample photographs of scikit-image (and matplotlib's grace_hopper) at `size` px."""
    return sample_photographs(size, SMOOTH[:count])


def encrypt(images: np.ndarray, block_size: int, window: int = 0, group: str = "none"):
    spec = CipherSpec(
        "disposable", block_size, images.shape[1], (("group", group), ("window", window))
    )
    return create_cipher(Key.generate("auditor", spec)).encrypt(images, np.arange(len(images)))


def test_unscrambled_images_come_back_unchanged() -> None:
    plain = photographs(64, 2)
    result = score_reconstructions(plain, reconstruct(plain, 8), 8)
    assert result.direct == (1.0, 1.0)


def test_block_order_of_photographs_is_reassembled() -> None:
    plain = photographs(128, 3)  # 64 pieces of 16 pixels
    ciphertexts = encrypt(plain, 16)
    assert score_reconstructions(plain, ciphertexts, 16).summary("direct").mean < 0.2
    result = score_reconstructions(plain, reconstruct(ciphertexts, 16), 16)
    assert result.summary("direct").mean > 0.9
    assert result.summary("ssim").mean > 0.9


def test_knowing_the_windows_helps() -> None:
    plain = photographs(32, 6)  # CIFAR geometry: 8×8 blocks of 4 pixels, 2×2 windows
    ciphertexts = encrypt(plain, 4, window=4)
    per_window = score_reconstructions(plain, reconstruct(ciphertexts, 4, window=4), 4)
    whole = score_reconstructions(plain, reconstruct(ciphertexts, 4), 4)
    assert per_window.summary("direct").mean > whole.summary("direct").mean
    assert per_window.summary("direct").mean > 0.5


@pytest.mark.parametrize("group", ["rf", "np_cs"])
def test_a_group_element_per_block_is_undone(group: str) -> None:
    plain = photographs(128, 2)
    ciphertexts = encrypt(plain, 16, group=group)
    result = score_reconstructions(plain, reconstruct(ciphertexts, 16, group=group), 16, group)
    chance = 1 / 64
    assert result.summary("direct").mean > 0.6 > 20 * chance
    assert result.summary("ssim").mean > 0.6


def test_pixel_shuffled_pieces_are_matched_by_their_colours() -> None:
    """No seam survives a pixel shuffle; the solver matches pieces by their colour sets
    (symmetric, the same in both relations) and still puts neighbours together far more often
    than chance on smooth photographs."""
    plain = photographs(48, 2)  # 12×12 pieces of 4 pixels
    ciphertexts = encrypt(plain, 4, group="px")
    (right, right_colour), (down, down_colour) = set_seam_parts(
        to_blocks(ciphertexts, 4)[0].reshape(-1, 4, 4, 3)
    )
    assert np.allclose(right, right.T) and np.array_equal(right, down)
    assert np.isinf(np.diag(right)).all() and np.array_equal(right_colour, down_colour)
    result = score_reconstructions(plain, reconstruct(ciphertexts, 4, group="px"), 4, "px")
    chance = score_reconstructions(plain, ciphertexts, 4, "px")
    assert result.summary("neighbour").mean > 3 * chance.summary("neighbour").mean


def test_group_moves_compose_like_their_position_maps() -> None:
    elements = piece_group("np_cs_rf", 4)
    assert elements.size == 96
    for first in range(0, 96, 7):
        for second in range(0, 96, 5):
            composed = elements.compose[first, second]
            assert np.array_equal(
                elements.turn[composed], elements.turn[first] @ elements.turn[second]
            )
    assert (piece_group("none", 4).turn == np.eye(2)).all()


def test_solve_returns_one_version_of_every_piece() -> None:
    pieces = to_blocks(encrypt(photographs(64, 1), 16, group="rf"), 16)[0].reshape(16, 16, 16, 3)
    chosen, version = solve(pieces, 4, "rf")
    assert sorted(chosen) == list(range(16))
    assert ((version >= 0) & (version < 8)).all()


def test_bad_input_is_refused() -> None:
    with pytest.raises(PatchveilError, match="do not fill"):
        solve(np.zeros((3, 4, 4, 3), dtype=np.uint8), 2)
    with pytest.raises(PatchveilError, match="does not divide"):
        reconstruct(np.zeros((1, 16, 16, 3), dtype=np.uint8), 4, window=3)


def test_the_best_cyclic_shift_is_the_cheapest_of_all_shifts() -> None:
    from patchveil.audit.jigsaw_mgc import best_roll, border_costs, total_cost

    random = np.random.default_rng(1)
    for side in (2, 3, 5):
        right, down = random.random((2, side * side, side * side))
        border = border_costs(right, down)
        grid = random.permutation(side * side).reshape(side, side)
        for edge in (None, border):
            shifts = [np.roll(grid, (a, b), axis=(0, 1)) for a in range(side) for b in range(side)]
            cheapest = min(total_cost(shifted, right, down, edge) for shifted in shifts)
            chosen = total_cost(best_roll(grid, right, down, edge), right, down, edge)
            assert chosen == pytest.approx(cheapest)
