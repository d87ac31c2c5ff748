"""Key recovery: one known pair gives a shared key away; ciphertexts alone give its in-block part."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from patchveil.audit.key_recovery import (
    key_table_by_probes,
    known_plaintext_attack,
    max_assignment,
    model_of,
    recover_in_block_key,
    score_in_block_key,
    score_known_plaintext,
)
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_source


def natural_images(count: int, seed: int) -> np.ndarray:
    """CIFAR-10 images when the shared subset is present, else smooth random colour fields."""
    folder = default_cifar_dir()
    if folder is not None:
        images = load_source(folder, "train").images
        return images[np.random.default_rng(seed).choice(len(images), count, replace=False)]
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 5, 5, 3)).astype(np.float64)
    rows = np.linspace(0, 4, 32)
    low, high = np.floor(rows).astype(int), np.minimum(np.floor(rows).astype(int) + 1, 4)
    weight = (rows - low)[None, :, None, None]
    along = coarse[:, low] * (1 - weight) + coarse[:, high] * weight
    weight = (rows - low)[None, None, :, None]
    field = along[:, :, low] * (1 - weight) + along[:, :, high] * weight
    return np.clip(field + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)


def cipher_of(name: str):
    return create_cipher(Key.generate("auditor", CipherSpec(name, 4, 32)))


@pytest.mark.parametrize("name", ["conventional", "restricted", "invariant", "etc", "le", "plain"])
def test_probes_read_the_true_table(name: str) -> None:
    cipher = cipher_of(name)
    model = model_of(name, 4)
    images = natural_images(4, seed=1)
    table = key_table_by_probes(cipher.encrypt, 32, model.unit)
    assert np.array_equal(table.decrypt(cipher.encrypt(images), model.unit), images)


def test_one_known_pair_of_conventional_gives_its_key() -> None:
    cipher = cipher_of("conventional")
    model = model_of("conventional", 4)
    images = natural_images(21, seed=2)
    recovered = known_plaintext_attack(images[0], cipher.encrypt(images[:1])[0], model)
    truth = key_table_by_probes(cipher.encrypt, 32)
    result = score_known_plaintext(
        recovered, truth, images[1:], cipher.encrypt(images[1:]), "bytes"
    )
    assert result.key_fraction > 0.99
    assert result.images_exact == 1.0 and result.pixel_exact == 1.0
    assert result.to_json()["other_images"] == 20


@pytest.mark.parametrize("name", ["le", "etc", "pixel"])
def test_one_known_pair_decrypts_most_of_other_ciphers(name: str) -> None:
    cipher = cipher_of(name)
    model = model_of(name, 4)
    images = natural_images(11, seed=3)
    recovered = known_plaintext_attack(images[0], cipher.encrypt(images[:1])[0], model)
    truth = key_table_by_probes(cipher.encrypt, 32, model.unit)
    result = score_known_plaintext(
        recovered, truth, images[1:], cipher.encrypt(images[1:]), model.unit
    )
    assert result.key_fraction > 0.5 and result.pixel_exact > 0.5


def test_ciphertexts_alone_reveal_the_negative_positive_pattern_of_conventional() -> None:
    cipher = cipher_of("conventional")
    model = model_of("conventional", 4)
    attacked, public = natural_images(300, seed=4), natural_images(300, seed=5)
    ciphertexts = cipher.encrypt(attacked)
    key = recover_in_block_key(ciphertexts, public, model, restarts=3)
    truth = key_table_by_probes(cipher.encrypt, 32)
    result = score_in_block_key(key, truth, ciphertexts[:20], model)
    assert result.np_recovered > 0.95 > result.np_chance
    assert result.ps_recovered > result.ps_chance
    assert result.to_json()["ciphertexts"] == 20


def test_max_assignment_finds_the_best_permutation() -> None:
    rng = np.random.default_rng(0)
    score = rng.random((6, 6))
    chosen = max_assignment(score)
    assert sorted(chosen) == list(range(6))
    best = max(sum(score[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    assert np.isclose(score[np.arange(6), chosen].sum(), best)
