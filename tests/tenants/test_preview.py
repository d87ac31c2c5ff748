"""Tests for the side-by-side pictures: enlargement, tiling, column titles, the cipher gallery."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.tenants.ciphers import available_ciphers
from patchveil.tenants.preview import cipher_gallery, grid, labelled_grid, upscale

WHITE = 255


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(9).integers(0, 255, size=(3, 8, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize("factor", [1, 2, 5])
def test_upscale_turns_every_pixel_into_a_square(images: np.ndarray, factor: int) -> None:
    large = upscale(images[0], factor)
    assert large.shape == (8 * factor, 8 * factor, 3) and large.dtype == np.uint8
    for dy in range(factor):
        for dx in range(factor):
            assert np.array_equal(large[dy::factor, dx::factor], images[0])


def test_grid_places_images_between_white_gaps(images: np.ndarray) -> None:
    rows = [[images[0], images[1]], [images[2]]]
    canvas = grid(rows, gap=3)
    assert canvas.shape == (2 * (8 + 3) + 3, 2 * (8 + 3) + 3, 3) and canvas.dtype == np.uint8
    assert np.array_equal(canvas[3:11, 3:11], images[0])
    assert np.array_equal(canvas[3:11, 14:22], images[1])
    assert np.array_equal(canvas[14:22, 3:11], images[2])
    # The gaps and the missing cell of the short second row stay white.
    assert (canvas[14:22, 14:22] == WHITE).all()
    painted = np.zeros(canvas.shape[:2], dtype=bool)
    for top, left in ((3, 3), (3, 14), (14, 3)):
        painted[top : top + 8, left : left + 8] = True
    assert (canvas[~painted] == WHITE).all()


def test_labelled_grid_enlarges_to_the_target_width_and_titles_the_columns(
    images: np.ndarray,
) -> None:
    rows = [[images[0], images[1]], [images[2], images[0]]]
    picture = labelled_grid(rows, ["plain", "conventional"], target_width=40)
    factor = 40 // 8
    body = grid([[upscale(image, factor) for image in row] for row in rows])
    assert picture.dtype == np.uint8
    assert picture.shape == (18 + body.shape[0], body.shape[1], 3)
    assert np.array_equal(picture[18:], body)
    header = picture[:18]
    cell = 40 + 4
    for column in range(2):
        title_area = header[:, 4 + column * cell : (column + 1) * cell]
        assert (title_area != WHITE).any(), f"column {column} has no title"


def test_labelled_grid_never_shrinks_large_images() -> None:
    large = np.zeros((200, 200, 3), np.uint8)
    picture = labelled_grid([[large]], ["plain"], target_width=160)
    assert picture.shape == (18 + 200 + 8, 200 + 8, 3)


def test_cipher_gallery_shows_plain_beside_every_cipher(images: np.ndarray) -> None:
    picture, titles = cipher_gallery(images[:2], block_size=4)
    names = [name for name in available_ciphers() if name != "plain"]
    assert titles == ["plain", *names]
    factor, cell = 96 // 8, 96 + 4
    assert picture.shape == (18 + 2 * cell + 4, len(titles) * cell + 4, 3)
    for row in range(2):
        top = 18 + 4 + row * cell
        cells = [
            picture[top : top + 96, 4 + c * cell : 4 + c * cell + 96] for c in range(len(titles))
        ]
        assert np.array_equal(cells[0], upscale(images[row], factor))
        for name, encrypted in zip(names, cells[1:], strict=True):
            assert not np.array_equal(encrypted, cells[0]), f"{name} left image {row} unchanged"


def test_cipher_gallery_uses_fresh_keys_each_time(images: np.ndarray) -> None:
    first, _ = cipher_gallery(images[:1], block_size=4)
    second, _ = cipher_gallery(images[:1], block_size=4)
    # The plain column is the same; the encrypted columns come from new keys.
    plain_width = 4 + 96 + 4  # the left gap, the plain cell and the gap after it
    assert np.array_equal(first[:, :plain_width], second[:, :plain_width])
    assert not np.array_equal(first, second)
