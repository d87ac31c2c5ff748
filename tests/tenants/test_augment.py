"""Tenant-side augmentation: reproducible crop-and-flip variants of plain images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.errors import ImageFormatError
from patchveil.tenants.augment import augment_variant, crop_and_flip, tenant_seed


def images(count: int = 6, size: int = 8) -> np.ndarray:
    return np.random.default_rng(1).integers(1, 256, (count, size, size, 3), dtype=np.uint8)


def test_variants_are_reproducible_per_image_and_differ_between_variants() -> None:
    batch, indices = images(), np.arange(10, 16)
    first = augment_variant(batch, indices, 1, seed=7)
    assert np.array_equal(first, augment_variant(batch, indices, 1, seed=7))
    # An image's variant depends on its own index only, not on the rest of the batch.
    assert np.array_equal(first[2:3], augment_variant(batch[2:3], indices[2:3], 1, seed=7))
    assert not np.array_equal(first, augment_variant(batch, indices, 2, seed=7))
    assert not np.array_equal(first, augment_variant(batch, indices, 1, seed=8))
    assert tenant_seed("acme") != tenant_seed("bolt") and tenant_seed("acme") >= 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32))
def test_a_crop_keeps_the_size_and_shifts_by_at_most_the_padding(seed: int) -> None:
    image = images(1)[0]
    out = crop_and_flip(image, np.random.default_rng(seed), padding=2)
    assert out.shape == image.shape and out.dtype == np.uint8
    # Undo the flip if there was one; the crop then matches the image shifted by (dy, dx).
    for candidate in (out, out[:, ::-1]):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = np.zeros_like(image)
                src = image[max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)]
                shifted[max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)] = src
                if np.array_equal(candidate, shifted):
                    return
    pytest.fail("the output is no padded crop of the image, flipped or not")


def test_bad_input_is_refused() -> None:
    with pytest.raises(ImageFormatError, match="uint8"):
        augment_variant(images().astype(np.float32), np.arange(6), 1, seed=0)
    with pytest.raises(ImageFormatError, match="one image index per image"):
        augment_variant(images(), np.arange(5), 1, seed=0)
