"""Tests for the clone defence: α by volume, keyed key-invariant errors, the watermark."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.defence import (
    CloneDefence,
    DefenceSettings,
    EmbeddingHasher,
    confusable_classes,
    intentional_error_rate,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
DIM = 192
CLASSES = 10


def embeddings(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM))


def probabilities(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(CLASSES), count)


def key_noise(points: np.ndarray, relative: float, seed: int = 2) -> np.ndarray:
    """The same images under other keys: the invariant embedding moves by float noise only;
    `relative` is the noise's norm over the embedding's."""
    noise = np.random.default_rng(seed).standard_normal(points.shape) / np.sqrt(DIM)
    return points + relative * np.linalg.norm(points, axis=1, keepdims=True) * noise


@pytest.fixture(scope="module")
def defence() -> CloneDefence:
    head = np.random.default_rng(3).standard_normal((CLASSES, DIM))
    return CloneDefence.for_model(SECRET, DefenceSettings(), head, embeddings(500, seed=30))


# --- α by volume --------------------------------------------------------------------------


def test_alpha_is_zero_for_normal_use_and_near_max_at_cloning_volume() -> None:
    settings = DefenceSettings()
    assert intentional_error_rate(0, settings) == 0.0
    assert intentional_error_rate(settings.normal_volume, settings) == 0.0
    assert intentional_error_rate(settings.cloning_volume, settings) == pytest.approx(
        settings.max_error_rate
    )
    assert intentional_error_rate(10 * settings.cloning_volume, settings) == pytest.approx(
        settings.max_error_rate
    )
    volumes = np.geomspace(settings.normal_volume, settings.cloning_volume, 50).astype(int)
    rates = [intentional_error_rate(int(v), settings) for v in volumes]
    assert np.all(np.diff(rates) >= 0), "α never falls"
    assert max(np.diff(rates)) < 0.1, "α rises smoothly, not in a jump"


def test_a_risky_tenant_gets_errors_before_cloning_volume() -> None:
    settings = DefenceSettings()
    assert intentional_error_rate(100, settings, risk=settings.risk_floor) == 0.0
    assert intentional_error_rate(100, settings, risk=1.0) == pytest.approx(settings.max_error_rate)


@pytest.mark.parametrize(
    "overrides",
    [
        {"normal_volume": 5000, "cloning_volume": 100},
        {"max_error_rate": 1.5},
        {"watermark_rate": -0.1},
        {"lsh_bits": 0},
        {"confusable_k": 0},
    ],
)
def test_impossible_settings_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(PatchveilError):
        DefenceSettings(**overrides)  # type: ignore[arg-type]


# --- confusable classes and the hash ------------------------------------------------------


def test_confusable_classes_are_the_most_alike_head_rows() -> None:
    head = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    confusable = confusable_classes(head, 2)
    assert confusable.shape == (4, 2)
    assert confusable[0].tolist() == [1, 2]
    assert confusable[3].tolist() == [2, 1]
    assert all(row not in confusable[row] for row in range(4))


def test_the_same_image_under_other_keys_keeps_its_code_and_distinct_images_spread() -> None:
    hasher = EmbeddingHasher(DIM, bits=16, seed=0)
    points = embeddings(5000)
    codes = hasher.codes(points)
    assert (hasher.codes(key_noise(points, 1e-3)) == codes).mean() > 0.99
    assert (hasher.codes(key_noise(points, 1e-6)) == codes).mean() > 0.999
    # 5,000 distinct images over 2^16 codes: ~96% expected alone in theirs.
    assert len(np.unique(codes)) / len(codes) > 0.9


def collapsed(count: int, seed: int) -> np.ndarray:
    """Embeddings as a ViT gives them: far from the origin, filling a few directions."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(40).standard_normal((8, DIM))
    scales = np.geomspace(8.0, 1.0, 8)
    return (
        20.0
        + (rng.standard_normal((count, 8)) * scales) @ basis
        + 0.01 * rng.standard_normal((count, DIM))
    )


def largest_share(codes: np.ndarray) -> float:
    return float(np.unique(codes, return_counts=True)[1].max() / len(codes))


def test_fitting_on_reference_embeddings_spreads_the_codes() -> None:
    reference, queries = collapsed(2000, seed=41), collapsed(2000, seed=42)
    plain = EmbeddingHasher(DIM, 16, 0).codes(queries)
    fitted = EmbeddingHasher.fit(reference, 16, 0)
    codes = fitted.codes(queries)
    assert largest_share(plain) > 0.2  # hyperplanes through the origin barely cut the data
    # No code holds a large share, so no watermarked code alters many answers (8 directions
    # of data cut by 16 hyperplanes: fewer codes than 2^16 are reachable).
    assert largest_share(codes) < 0.01 and len(np.unique(codes)) > 0.5 * len(codes)
    assert (fitted.codes(key_noise(queries, 1e-6)) == codes).mean() > 0.999
    # The same sample fitted again, even in another row order, hashes alike.
    again = EmbeddingHasher.fit(reference[::-1], 16, 0)
    assert (again.codes(queries) == codes).mean() > 0.99
    assert "whitened_dims=8" in repr(fitted)


def test_the_hash_is_fixed_by_its_seed() -> None:
    points = embeddings(100)
    assert np.array_equal(
        EmbeddingHasher(DIM, 16, 7).codes(points), EmbeddingHasher(DIM, 16, 7).codes(points)
    )
    assert not np.array_equal(
        EmbeddingHasher(DIM, 16, 7).codes(points), EmbeddingHasher(DIM, 16, 8).codes(points)
    )


# --- answers ------------------------------------------------------------------------------


def test_answers_are_deterministic_and_survive_key_noise(defence: CloneDefence) -> None:
    points, probs = embeddings(2000), probabilities(2000)
    first = defence.answer(50_000, points, probs)
    again = defence.answer(50_000, points, probs)
    assert np.array_equal(first.labels, again.labels)
    assert first.codes == again.codes
    noisy = defence.answer(50_000, key_noise(points, 1e-6), probs)
    assert np.array_equal(noisy.labels, first.labels), "a cloner cannot vote the errors away"


def test_another_secret_errs_on_other_images(defence: CloneDefence) -> None:
    points, probs = embeddings(2000), probabilities(2000)
    other = CloneDefence(OTHER_SECRET, defence.settings, defence.confusable, defence.hasher)
    mine = defence.answer(5_000, points, probs)
    theirs = other.answer(5_000, points, probs)
    assert mine.error_rate == theirs.error_rate
    assert (mine.altered != theirs.altered).mean() > 0.2


def test_error_rate_follows_alpha_and_wrong_labels_are_confusable(defence: CloneDefence) -> None:
    points, probs = embeddings(4000), probabilities(4000)
    normal = defence.answer(0, points[:500], probs[:500])
    assert normal.error_rate == 0.0
    assert normal.altered.sum() == normal.watermarked.sum()  # only the watermark alters
    cloning = defence.answer(100_000, points, probs)
    assert cloning.error_rate == pytest.approx(defence.settings.max_error_rate)
    assert abs(cloning.altered.mean() - cloning.error_rate) < 0.03
    assert np.array_equal(cloning.true_labels, probs.argmax(axis=1))
    altered = np.flatnonzero(cloning.altered)
    for row in altered:
        assert cloning.labels[row] in defence.confusable[cloning.true_labels[row]]


def test_errors_only_grow_with_volume(defence: CloneDefence) -> None:
    points, probs = embeddings(2000), probabilities(2000)
    low = defence.answer(4_000, points, probs).altered
    high = defence.answer(10_000, points, probs).altered
    assert low.sum() < high.sum()
    assert not (low & ~high).any(), "an image erred at low volume keeps erring"


def test_the_watermark_rate_holds_whatever_alpha_is(defence: CloneDefence) -> None:
    points, probs = embeddings(20_000, seed=5), probabilities(20_000, seed=6)
    quiet = defence.answer(0, points[:1000], probs[:1000])
    answers = defence.answer(0, points, probs)
    rate = answers.watermarked.mean()
    assert 0.0035 < rate < 0.0065, rate  # 0.5% ± 3 binomial standard deviations
    assert answers.altered[answers.watermarked].all()
    assert np.array_equal(quiet.watermarked, answers.watermarked[:1000])
    mask, labels = defence.watermark(points[:2000], probs[:2000])
    assert np.array_equal(mask, answers.watermarked[:2000])
    assert np.array_equal(labels[mask], answers.labels[:2000][mask])


def test_the_secret_never_shows(defence: CloneDefence, caplog: pytest.LogCaptureFixture) -> None:
    texts = [repr(defence), str(defence), repr(defence.settings), repr(defence.hasher)]
    answers = defence.answer(0, embeddings(10), probabilities(10))
    texts.append(repr(answers))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("patchveil").info("defence %r", defence)
    texts.append(caplog.text)
    try:
        defence.answer(0, embeddings(3), probabilities(4))
    except PatchveilError as error:
        texts.append(str(error))
    for text in texts:
        assert SECRET.hex() not in text and repr(SECRET) not in text, text
    with pytest.raises(PatchveilError):
        CloneDefence(b"short", defence.settings, defence.confusable, defence.hasher)
