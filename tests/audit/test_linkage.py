"""Known-image linkage finds every source of an exactly key-free cipher in a small gallery."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.audit.linkage import canonical_block_keys, invariant_of, link_images
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key


def textured_images(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields: distinct images whose blocks rarely repeat."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.float64)
    fine = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
    noise = rng.normal(0, 12, fine.shape)
    return np.clip(fine + noise, 0, 255).astype(np.uint8)


def encrypt(images: np.ndarray, name: str, params: tuple = ()) -> np.ndarray:
    cipher = create_cipher(Key.generate("auditor", CipherSpec(name, 4, images.shape[1], params)))
    return cipher.encrypt(images, np.arange(len(images)) if cipher.per_image else None)


@pytest.mark.parametrize(
    "params",
    [
        (("group", "np_cs"), ("window", 0)),
        (("group", "rf"), ("window", 0)),
        (("group", "none"), ("window", 2)),
        (("group", "np_cs_rf"), ("window", 2)),
        (("group", "px"), ("window", 0)),
        (("group", "np_cs_px"), ("window", 2)),
    ],
)
def test_every_source_of_a_disposable_cipher_ranks_first(params: tuple) -> None:
    gallery = textured_images(50)
    queries = np.arange(0, 50, 5)
    ciphertexts = encrypt(gallery[queries], "disposable", params)
    invariant, window = invariant_of("disposable", dict(params))
    result = link_images(gallery, ciphertexts, queries, 4, invariant, window)
    assert result.rank1 == 1.0 and result.rank5 == 1.0
    assert result.gallery_size == 50 and result.queries == 10
    assert result.to_json()["rank1"] == 1.0


@pytest.mark.parametrize("name", ["conventional", "le", "etc", "pixel"])
def test_shared_key_ciphers_are_linked_by_folded_blocks(name: str) -> None:
    gallery = textured_images(40, size=16, seed=1)
    queries = np.arange(0, 40, 4)
    invariant, window = invariant_of(name)
    result = link_images(gallery, encrypt(gallery[queries], name), queries, 4, invariant, window)
    assert result.rank1 == 1.0


def test_canonical_keys_are_equal_on_an_orbit_and_differ_off_it() -> None:
    image = textured_images(1, size=8)
    turned = np.rot90(image, 1, axes=(1, 2))  # one 8-px block, turned: same orbit under rf
    keys = canonical_block_keys(np.concatenate([image, turned]), 8, "rf")
    assert keys[0, 0] == keys[1, 0]
    inverted = 255 - image
    assert canonical_block_keys(inverted, 8, "rf")[0, 0] != keys[0, 0]
    assert (
        canonical_block_keys(inverted, 8, "np_rf")[0, 0]
        == canonical_block_keys(image, 8, "np_rf")[0, 0]
    )


def test_window_layout_restricts_matches_to_their_window() -> None:
    gallery = textured_images(20)
    ciphertexts = encrypt(gallery[:5], "disposable", (("group", "none"), ("window", 2)))
    # Quadrants of the gallery image moved to other windows no longer match in-window.
    swapped = np.roll(gallery[:5], 8, axis=1)
    result = link_images(swapped, ciphertexts, np.arange(5), 4, "none", 2)
    assert result.mean_shared_blocks < 0.1
