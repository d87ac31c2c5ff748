"""Block groups: names, orders, and the same group on the cipher and the model side."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patchveil.groups import GROUP_NAMES, parse_group, window_of_blocks
from patchveil.models.invariant_embed import SetPatchEmbed
from patchveil.models.preprocess import images_to_tensor
from patchveil.models.vit import ModelSpec, create_vit_from_spec
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.ciphers.disposable import group_tables
from patchveil.tenants.keys import CipherSpec, Key


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_tables_hold_every_element_once(name: str) -> None:
    orders, flips = group_tables(name, 4)
    assert len(orders) == parse_group(name).order
    elements = {tuple(order) + tuple(flip) for order, flip in zip(orders, flips, strict=True)}
    assert len(elements) == len(orders)
    assert all(sorted(order) == list(range(48)) for order in orders)


def test_unknown_group_is_refused_on_both_sides() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        parse_group("np_np")
    with pytest.raises(Exception, match="choose one of"):
        create_cipher(Key.generate("t", CipherSpec("disposable", 4, 16, (("group", "xy"),))))


@pytest.mark.parametrize("name", ["none", "np", "cs", "rf", "np_cs", "np_cs_rf", "px", "np_cs_px"])
def test_invariant_vit_ignores_every_disposable_key(name: str) -> None:
    """Exact key independence: the same logits for plain images and for any per-image key."""
    torch.manual_seed(0)
    variant = "position_free" if name == "none" else "invariant"
    params = () if name == "none" else (("invariance_group", name),)
    spec = ModelSpec(variant, "test", 16, 4, 10, params=params)
    model = create_vit_from_spec(spec).eval()
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        reference = model(images_to_tensor(images))
        for tenant in ("a", "b"):
            cipher = create_cipher(
                Key.generate(tenant, CipherSpec("disposable", 4, 16, (("group", name),)))
            )
            encrypted = cipher.encrypt(images, np.arange(3) + 100)
            assert not np.array_equal(encrypted, images)
            logits = model(images_to_tensor(encrypted))
            torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["none", "rf", "np_cs", "np_px"])
def test_window_position_vit_ignores_every_windowed_disposable_key(name: str) -> None:
    """The same exactness with the coarse layout kept: window 2 of a 4×4-block grid."""
    torch.manual_seed(0)
    group = None if name == "none" else name
    params = (("position_window", 2),) + ((("invariance_group", group),) if group else ())
    spec = ModelSpec("window_position", "test", 16, 4, 10, params=params)
    model = create_vit_from_spec(spec).eval()
    images = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    params = (("group", name), ("window", 2))
    cipher = create_cipher(Key.generate("a", CipherSpec("disposable", 4, 16, params)))
    encrypted = cipher.encrypt(images, np.arange(3))
    assert not np.array_equal(encrypted, images)
    with torch.no_grad():
        torch.testing.assert_close(
            model(images_to_tensor(encrypted)), model(images_to_tensor(images)), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("pool", ["max", "mean_max", "sorted"])
@pytest.mark.parametrize("name", ["rf", "np_rf"])
def test_every_orbit_pool_ignores_every_disposable_key(pool: str, name: str) -> None:
    """Richer symmetric pools over the orbit (max, mean and max, the sorted responses) keep the
    exact key independence of the mean, with and without the window's coarse layout."""
    torch.manual_seed(0)
    images = np.random.default_rng(3).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    for window in (0, 2):
        params = (("invariance_group", name), ("orbit_pool", pool))
        variant = "invariant"
        if window:
            variant, params = "window_position", (*params, ("position_window", window))
        model = create_vit_from_spec(ModelSpec(variant, "test", 16, 4, 10, params=params)).eval()
        spec = CipherSpec("disposable", 4, 16, (("group", name), ("window", window)))
        encrypted = create_cipher(Key.generate("a", spec)).encrypt(images, np.arange(3) + 7)
        with torch.no_grad():
            torch.testing.assert_close(
                model(images_to_tensor(encrypted)),
                model(images_to_tensor(images)),
                atol=1e-5,
                rtol=0,
            )


def test_orbit_pool_is_checked_and_needs_a_group() -> None:
    with pytest.raises(Exception, match="choose one of"):
        create_vit_from_spec(
            ModelSpec("invariant", "test", 16, 4, 10, params=(("orbit_pool", "median"),))
        )
    with pytest.raises(Exception, match="needs an invariance_group"):
        create_vit_from_spec(
            ModelSpec(
                "window_position",
                "test",
                16,
                4,
                10,
                params=(("position_window", 2), ("orbit_pool", "max")),
            )
        )


def block_colours(images: np.ndarray, block_size: int) -> np.ndarray:
    """[N, blocks, M²]: every block's colours as 24-bit numbers, sorted (its colour multiset)."""
    count, size = images.shape[:2]
    side = size // block_size
    grid = images.reshape(count, side, block_size, side, block_size, 3).transpose(0, 1, 3, 2, 4, 5)
    pixels = grid.reshape(count, side * side, -1, 3).astype(np.int64)
    return np.sort(pixels @ np.array([1 << 16, 1 << 8, 1]), axis=-1)


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("name", ["px", "np_px", "cs_px", "np_cs_px"])
def test_a_pixel_shuffle_draws_a_fresh_pixel_order_per_block_and_decrypts(
    name: str, window: int
) -> None:
    images = np.random.default_rng(4).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    spec = CipherSpec("disposable", 4, 16, (("group", name), ("window", window)))
    cipher = create_cipher(Key.generate("a", spec))
    nonces = np.arange(4) + 11
    encrypted = cipher.encrypt(images, nonces)
    assert np.array_equal(cipher.decrypt(encrypted, nonces), images)
    again = cipher.encrypt(images, nonces + 100)  # other nonces: other orders
    assert not np.array_equal(again, encrypted)
    if name == "px":
        # Only positions change: the multiset of block colour multisets is the plain one, and
        # inside a block the pixels are in an order of their own (not just a moved block).
        plain_sets = np.sort(block_colours(images, 4).reshape(4, -1), axis=1)
        cipher_sets = np.sort(block_colours(encrypted, 4).reshape(4, -1), axis=1)
        assert np.array_equal(plain_sets, cipher_sets)
        plain_blocks = {bytes(b) for b in to_rows(images)}
        assert len(plain_blocks & {bytes(b) for b in to_rows(encrypted)}) < 4
    assert parse_group(name).pixel_shuffle and not parse_group(name).rotation_flip


def to_rows(images: np.ndarray) -> np.ndarray:
    count, size = images.shape[:2]
    side = size // 4
    grid = images.reshape(count, side, 4, side, 4, 3).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(-1, 48)


def test_pixel_shuffle_groups_count_their_elements_and_refuse_rf() -> None:
    assert parse_group("np_cs_px").table_group == "np_cs"
    assert parse_group("px").log2_order(4) == pytest.approx(math.log2(math.factorial(16)))
    spec = CipherSpec("disposable", 4, 16, (("group", "np_px"),))
    bits = create_cipher(Key.generate("a", spec)).key_space_bits(spec)
    # 16! block orders, and 16 blocks × (negative–positive × 16! pixel orders).
    assert bits == pytest.approx(math.log2(math.factorial(16)) * 17 + 16)
    with pytest.raises(ValueError, match="choose one of"):
        parse_group("rf_px")
    with pytest.raises(ValueError, match="pixel-shuffle groups"):
        SetPatchEmbed(16, 4, 3, 32, group="np_cs")


def test_windows_are_numbered_in_raster_order() -> None:
    quadrants = window_of_blocks(4, 2).reshape(4, 4)
    assert quadrants.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert window_of_blocks(4, 4).tolist() == [0] * 16
    assert window_of_blocks(4, 1).tolist() == list(range(16))
    with pytest.raises(ValueError, match="does not divide"):
        window_of_blocks(4, 3)
