"""Learned inversion: the attacker's networks, fresh keys, honest scores, tiny budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from patchveil.audit.embedding import EmbeddingNet
from patchveil.audit.inversion import (
    BlockSetInverter,
    FreshKeys,
    attacker_model_for,
    audit_inversion,
    victim_encrypt,
)
from patchveil.tenants.keys import CipherSpec


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def smooth_images(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Random colour ramps in random directions: every block's place follows from its content."""
    rng = np.random.default_rng(seed)
    rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    start = rng.uniform(30, 120, (count, 1, 1, 3))
    slope_rows = rng.uniform(2, 7, (count, 1, 1, 3))
    slope_columns = rng.uniform(-4, 4, (count, 1, 1, 3))
    images = start + slope_rows * rows[None, :, :, None] + slope_columns * columns[None, :, :, None]
    return np.clip(images, 0, 255).astype(np.uint8)


def test_attacker_picks_a_network_per_cipher() -> None:
    assert attacker_model_for(CipherSpec("plain", 4, 32)) == "unet"
    assert attacker_model_for(CipherSpec("pixel", 4, 32)) == "unet"
    assert attacker_model_for(CipherSpec("conventional", 4, 32)) == "blocks"
    assert attacker_model_for(CipherSpec("disposable", 4, 32, (("window", 4),))) == "blocks"


@pytest.mark.parametrize("window", [0, 2])
def test_block_decoder_ignores_the_order_the_cipher_hides(window: int) -> None:
    """Any block order inside the public windows gives the same output."""
    spec = CipherSpec("disposable", 4, 16, (("group", "none"), ("window", window)))
    torch.manual_seed(0)
    model = BlockSetInverter(4, 16, window=window, width=32).eval()
    images = smooth_images(3)
    ciphertext = victim_encrypt(spec, images)
    other = FreshKeys(spec).encrypt(images)
    assert not np.array_equal(ciphertext, other)

    def run(batch: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1)

    assert torch.allclose(run(ciphertext), run(other), atol=1e-5)


def test_fresh_keys_differ_per_batch() -> None:
    images = smooth_images(4)
    for spec in (CipherSpec("conventional", 4, 16), CipherSpec("disposable", 4, 16)):
        fresh = FreshKeys(spec)
        first, second = fresh.encrypt(images), fresh.encrypt(images)
        assert not np.array_equal(first, second)
        assert not np.array_equal(first, victim_encrypt(spec, images))


def test_identity_cipher_inverts_almost_perfectly() -> None:
    images = smooth_images(96, seed=1)
    torch.manual_seed(0)
    classifier = EmbeddingNet(classes=2).eval()
    labels = np.arange(32) % 2
    result, ciphertexts, inverted = audit_inversion(
        CipherSpec("plain", 4, 16), images[:64], images[64:], labels, classifier, steps=3
    )
    assert result.model == "unet"
    assert result.ciphertext_ssim == pytest.approx(1.0)
    assert result.ssim > 0.95
    assert result.psnr > 30
    assert abs(result.recognisability - result.plain_accuracy) <= 0.1
    assert inverted.shape == ciphertexts.shape == images[64:].shape
    payload = json.loads(json.dumps(result.to_json()))
    assert payload["cipher"] == "plain"
    assert {"ssim", "psnr", "recognisability", "params", "block_size", "image_size"} <= set(payload)


def test_block_order_inversion_beats_the_ciphertext() -> None:
    """Windowed block order on smooth images: a tiny budget already puts blocks back."""
    spec = CipherSpec("disposable", 4, 16, (("group", "none"), ("window", 2)))
    images = smooth_images(600, seed=2)
    torch.manual_seed(0)
    classifier = EmbeddingNet(classes=2).eval()
    result, _, _ = audit_inversion(
        spec, images[:500], images[500:], np.arange(100) % 2, classifier, steps=400,
        batch_size=32,
    )  # fmt: skip
    assert result.model == "blocks"
    assert result.ssim > result.ciphertext_ssim + 0.2, result
    assert result.psnr > result.ciphertext_psnr + 3, result
