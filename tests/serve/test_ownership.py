"""Tests for the clone check: scores, calibration against independent models, ROC and AUC."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.ownership import (
    auc,
    calibrate,
    clone_score,
    decide,
    roc_curve,
    suspect_scores,
    threshold_at_false_positive_rate,
    watermark_p_value,
)

CLASSES = 10
DIM = 32
PROBES = 600
TRUTH = np.random.default_rng(0).standard_normal((CLASSES, DIM))
ORIGINAL = TRUTH + 0.8 * np.random.default_rng(1).standard_normal((CLASSES, DIM))
PROBE_INPUTS = np.random.default_rng(2).standard_normal((PROBES, DIM))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def answers(weight: np.ndarray, sharpness: float = 1.0) -> np.ndarray:
    return softmax(sharpness * PROBE_INPUTS @ weight.T)


def independent_model(seed: int) -> np.ndarray:
    """Trained on disjoint data: the same task, its own errors."""
    return answers(TRUTH + 0.8 * np.random.default_rng(seed).standard_normal((CLASSES, DIM)))


def clone_model(seed: int) -> np.ndarray:
    """Trained on our answers: close to our model, a little more confident."""
    noise = 0.3 * np.random.default_rng(seed).standard_normal((CLASSES, DIM))
    return answers(ORIGINAL + noise, sharpness=1.1)


OURS = answers(ORIGINAL)
# Watermark probes: every 20th, answered by us with a label other than our top-1.
WATERMARK = np.full(PROBES, -1)
WATERMARK[::20] = (OURS[::20].argmax(axis=1) + 1) % CLASSES


def scores_of(theirs: np.ndarray, repeats_watermark: bool = False, labels_only: bool = False):
    labels = theirs.argmax(axis=1)
    if repeats_watermark:
        labels = np.where(WATERMARK >= 0, WATERMARK, labels)
    return suspect_scores(OURS, labels, None if labels_only else theirs, WATERMARK)


@pytest.fixture(scope="module")
def null():
    return calibrate([scores_of(independent_model(100 + i)) for i in range(5)])


def test_a_clone_is_named_and_an_independent_model_is_not(null) -> None:
    clone = scores_of(clone_model(7))
    independent = scores_of(independent_model(8))
    assert clone.label_agreement > independent.label_agreement
    assert clone.likelihood_similarity > independent.likelihood_similarity
    assert clone.likelihood_gap > 0
    assert decide(clone, null).is_clone
    verdict = decide(independent, null)
    assert not verdict.is_clone and verdict.reasons == ()
    assert decide(clone, null).to_json()["scores"]["probes"] == PROBES


def test_labels_alone_still_separate(null) -> None:
    clone = scores_of(clone_model(9), labels_only=True)
    assert clone.likelihood_similarity is None and clone.likelihood_gap is None
    assert clone_score(clone, null) > clone_score(
        scores_of(independent_model(10), labels_only=True), null
    )
    assert decide(clone, null).is_clone


def test_watermark_hits_name_a_clone_on_their_own(null) -> None:
    marked = scores_of(independent_model(11), repeats_watermark=True)
    assert marked.watermark_probes == PROBES // 20 and marked.watermark_hits == PROBES // 20
    verdict = decide(marked, null)
    assert verdict.is_clone and any("watermark" in reason for reason in verdict.reasons)
    assert verdict.watermark_p_value < 1e-6
    assert watermark_p_value(0, 0, 0.1) == 1.0
    assert watermark_p_value(3, 30, 0.1) > 0.3


def test_auc_separates_clones_from_independent_models(null) -> None:
    scores = [clone_score(scores_of(clone_model(200 + i)), null) for i in range(8)]
    scores += [clone_score(scores_of(independent_model(300 + i)), null) for i in range(8)]
    truth = np.r_[np.ones(8, bool), np.zeros(8, bool)]
    assert auc(np.array(scores), truth) > 0.95


def test_roc_and_auc_on_known_cases() -> None:
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool)) == pytest.approx(0.75)
    assert auc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == pytest.approx(0.5)
    assert auc(np.array([0.0, 1.0]), np.array([0, 1], bool)) == pytest.approx(1.0)
    fpr, tpr, thresholds = roc_curve(np.array([0.2, 0.9, 0.5]), np.array([0, 1, 0], bool))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.9, 0.5, 0.2]
    with pytest.raises(PatchveilError):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 1], bool))


def test_threshold_keeps_the_false_positive_rate() -> None:
    null_scores = np.array([1.0, 4.0, 2.0, 3.0])
    assert 4.0 < threshold_at_false_positive_rate(null_scores, 0.0) < 4.0001
    assert 3.0 < threshold_at_false_positive_rate(null_scores, 0.25) < 3.0001
    for rate in (0.0, 0.25, 0.5):
        threshold = threshold_at_false_positive_rate(null_scores, rate)
        assert (null_scores >= threshold).mean() <= rate


def test_bad_answers_are_refused() -> None:
    with pytest.raises(PatchveilError, match="suspect_labels"):
        suspect_scores(OURS, np.zeros(3, np.int64))
    with pytest.raises(PatchveilError, match="suspect_probabilities"):
        suspect_scores(OURS, OURS.argmax(axis=1), OURS[:, :5])
    with pytest.raises(PatchveilError):
        calibrate([])
