"""Tests for the clone check: scores, the shared-error test, calibration against independent
models, the decision, ROC and AUC."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.ownership import (
    NullCalibration,
    auc,
    calibrate,
    clone_score,
    decide,
    errors_of_ours,
    model_correlation,
    overdispersed_binomial_tail,
    roc_curve,
    shared_error_test,
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
TRUE_LABELS = (PROBE_INPUTS @ TRUTH.T).argmax(axis=1)
# Watermark probes: every 20th, answered by us with a label other than our top-1.
WATERMARK = np.full(PROBES, -1)
WATERMARK[::20] = (OURS[::20].argmax(axis=1) + 1) % CLASSES


def scores_of(
    theirs: np.ndarray,
    repeats_watermark: bool = False,
    labels_only: bool = False,
    true_labels: np.ndarray | None = None,
):
    labels = theirs.argmax(axis=1)
    if repeats_watermark:
        labels = np.where(WATERMARK >= 0, WATERMARK, labels)
    return suspect_scores(OURS, labels, None if labels_only else theirs, WATERMARK, true_labels)


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
    assert verdict.shared_errors.p_value > 0.01
    named = decide(clone, null)
    assert named.to_json()["scores"]["probes"] == PROBES
    assert named.shared_errors.p_value < 1e-20 and "repeats" in named.reasons[0]
    assert named.shared_errors.rate > 2 * named.shared_errors.null_rate
    assert set(named.to_json()["shared_errors"]) >= {"p_value", "rate", "null_rate", "repeats"}
    assert "labels" not in named.to_json()["scores"]  # per-probe answers stay out of reports


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


def test_the_overdispersed_binomial_tail_on_known_cases() -> None:
    from scipy import stats

    for successes in (0, 5, 12, 25, 40):
        assert overdispersed_binomial_tail(successes, 40, 0.3, 0.0) == pytest.approx(
            stats.binom.sf(successes - 1, 40, 0.3), rel=1e-9
        )
        spread = (1 - 0.05) / 0.05
        assert overdispersed_binomial_tail(successes, 40, 0.3, 0.05) == pytest.approx(
            stats.betabinom.sf(successes - 1, 40, 0.3 * spread, 0.7 * spread), rel=1e-6
        )
    # Overdispersion fattens the tail; a tiny tail keeps its digits (summed, not 1 − the rest).
    assert overdispersed_binomial_tail(20, 40, 0.3, 0.05) > overdispersed_binomial_tail(
        20, 40, 0.3, 0.0
    )
    spread = (1 - 0.01) / 0.01
    assert overdispersed_binomial_tail(300, 300, 0.1, 0.01) == pytest.approx(
        np.exp(stats.betabinom.logpmf(300, 300, 0.1 * spread, 0.9 * spread)), rel=1e-9
    )
    assert 0 < overdispersed_binomial_tail(300, 300, 0.1, 0.01) < 1e-50
    assert overdispersed_binomial_tail(41, 40, 0.3, 0.05) == 0.0
    with pytest.raises(PatchveilError):
        overdispersed_binomial_tail(1, 4, 0.3, 1.0)


def test_model_correlation_is_the_spread_beyond_binomial_noise() -> None:
    assert model_correlation(np.array([30, 30, 30]), np.array([300, 300, 300])) == 0.0
    assert model_correlation(np.array([30]), np.array([300])) == 0.0  # one model: no spread
    # Rates 0.05, 0.10, 0.15 of 1000 each: variance 0.0025, binomial ≈ 0.00009.
    rho = model_correlation(np.array([50, 100, 150]), np.array([1000, 1000, 1000]))
    assert rho == pytest.approx((0.0025 - 0.1 * 0.9 / 1000) / (0.1 * 0.9))


def test_errors_of_ours_counts_each_model_against_the_others() -> None:
    ours = np.array([0, 1, 2, 3])
    group = np.array(
        [
            [0, 1, 2, 0],  # repeats us on probes 0-2
            [0, 2, 0, 0],
            [0, 2, 0, 0],
            [1, 2, 2, 0],
        ]
    )
    eligible, repeats = errors_of_ours(ours, group)
    # Probe 0: three of four say ours, so each model sees at least two of its three others
    # agree with us (not fewer than half): no error of ours there.
    assert not eligible[:, 0].any()
    # Probe 1: only model 0 says ours; for it no other does: an error of ours it repeats.
    assert eligible[:, 1].all() and repeats[:, 1].tolist() == [True, False, False, False]
    # Probe 2: models 0 and 3 say ours; each sees one of three others agree (fewer than half),
    # models 1 and 2 see two of three: eligible for 0 and 3 only, and both repeat.
    assert eligible[:, 2].tolist() == [True, False, False, True]
    assert repeats[:, 2].tolist() == [True, False, False, True]
    # Probe 3: nobody says ours.
    assert eligible[:, 3].all() and not repeats[:, 3].any()
    truth = np.array([0, 0, 2, 0])  # our label is right on probes 0 and 2
    eligible, repeats = errors_of_ours(ours, group, truth)
    assert not eligible[:, [0, 2]].any() and repeats[:, 1].tolist() == [True, False, False, False]
    with pytest.raises(PatchveilError):
        errors_of_ours(ours, group[:1])


def test_independent_models_pass_at_the_nominal_rate() -> None:
    """Groups of exchangeable models, each probe with its own chance of our label and each
    model a little more or less like ours: a model scored against the others is named at a 5%
    level at most about 5% of the time (the plain binomial would name far more)."""
    rng = np.random.default_rng(4)
    probes, models, trials = 300, 4, 300
    ours = np.zeros(probes, np.int64)
    p_values, plain = [], []
    for _ in range(trials):
        chance = rng.beta(0.6, 1.4, probes).clip(1e-3, 1 - 1e-3)
        shifted = np.log(chance / (1 - chance))[None, :] + 0.2 * rng.standard_normal((models, 1))
        said = rng.random((models, probes)) < 1 / (1 + np.exp(-shifted))
        labels = np.where(said, 0, rng.integers(1, 10, (models, probes)))
        p_values.append(shared_error_test(ours, labels[0], labels[1:]).p_value)
        plain.append(
            shared_error_test(ours, labels[0], labels[1:], min_model_correlation=0).p_value
        )
    slack = 3 * np.sqrt(0.05 * 0.95 / trials)
    assert np.mean(np.array(p_values) <= 0.05) <= 0.05 + slack
    assert np.mean(np.array(p_values) <= 0.5) <= 0.5 + 3 * np.sqrt(0.25 / trials)
    assert np.mean(np.array(plain) <= 0.05) >= np.mean(np.array(p_values) <= 0.05)


def test_with_true_labels_an_accurate_honest_model_is_not_named(null) -> None:
    """Without true labels an answer we alone give counts as our error even where it is right,
    so a much more accurate independent model repeats many; with them it repeats none."""
    accurate = answers(TRUTH + 0.1 * np.random.default_rng(12).standard_normal((CLASSES, DIM)))
    labelled_null = calibrate(
        [scores_of(independent_model(100 + i), true_labels=TRUE_LABELS) for i in range(5)]
    )
    verdict = decide(scores_of(accurate, true_labels=TRUE_LABELS), labelled_null)
    assert not verdict.is_clone and verdict.shared_errors.true_labels
    assert verdict.shared_errors.rate < verdict.shared_errors.null_rate
    clone = decide(scores_of(clone_model(13), true_labels=TRUE_LABELS), labelled_null)
    assert clone.is_clone and clone.shared_errors.p_value < 1e-20
    assert "wrong answers" in clone.reasons[0]


def test_the_z_score_is_reported_but_does_not_decide(null) -> None:
    # The null's means shifted so that an independent model's z is large: still not a clone.
    shifted = NullCalibration(
        {name: value - 1.0 for name, value in null.means.items()},
        null.scales,
        null.models,
        null.watermark_chance,
        null.null_labels,
    )
    verdict = decide(scores_of(independent_model(14)), shifted)
    assert verdict.score >= verdict.threshold and not verdict.is_clone
    # ... and shifted the other way, a clone with a low z is still named.
    shifted = NullCalibration(
        {name: value + 1.0 for name, value in null.means.items()},
        null.scales,
        null.models,
        null.watermark_chance,
        null.null_labels,
    )
    verdict = decide(scores_of(clone_model(15)), shifted)
    assert verdict.score < verdict.threshold and verdict.is_clone


def test_the_decision_needs_the_null_models_labels(null) -> None:
    bare = NullCalibration(null.means, null.scales, null.models, null.watermark_chance)
    with pytest.raises(PatchveilError, match="labels per probe"):
        decide(scores_of(clone_model(16)), bare)
    fewer = suspect_scores(OURS[:10], OURS[:10].argmax(axis=1))
    with pytest.raises(PatchveilError, match="same probes"):
        decide(fewer, null)
    with pytest.raises(PatchveilError, match="different numbers of probes"):
        calibrate([fewer, scores_of(independent_model(17))])
    with pytest.raises(PatchveilError, match="significance"):
        decide(scores_of(clone_model(16)), null, significance=0.0)
    assert len(null.to_json()["null_labels"]) == 5


def test_the_bench_scores_saved_answers_again(tmp_path) -> None:
    """bench/clone_defence.py's clone check, on synthetic answers: each null model is scored
    leave-one-out, clones against all nulls; the answers saved for --rescore give the same."""
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    sys.path.insert(0, bench)
    try:
        clone_defence = importlib.import_module("clone_defence")
    finally:
        sys.path.remove(bench)
    nulls = {f"independent-{i}": independent_model(400 + i) for i in range(4)}
    clones = {"copycat": clone_model(500), "knockoff": clone_model(501)}
    result = clone_defence.score_suspects(OURS, TRUE_LABELS, nulls, clones)
    decisions = {s["name"]: s for s in result["suspects"]}
    assert [decisions[n]["decision"] for n in nulls] == ["not a clone"] * 4
    assert [decisions[n]["decision"] for n in clones] == ["clone"] * 2
    assert all(decisions[n]["shared_errors"]["null_models"] == 3 for n in nulls)
    assert decisions["copycat"]["shared_errors"]["null_models"] == 4
    assert decisions["copycat"]["shared_errors"]["true_labels"]
    assert not decisions["copycat"]["label_free"]["true_labels"]
    assert decisions["copycat"]["label_free"]["decision"] == "clone"
    assert result["auc"] == 1.0 and "null_labels" not in result["calibration"]
    path = tmp_path / "answers.npz"
    answers = {"served": OURS, "true_labels": TRUE_LABELS, **nulls, **clones}
    clone_defence.save_answers(path, answers, list(nulls), "2026-01-01T00:00:00+00:00")
    again = clone_defence.rescore(path)
    assert again["answers_from"] == "2026-01-01T00:00:00+00:00"
    for before, after in zip(result["suspects"], again["suspects"], strict=True):
        assert (before["name"], before["decision"]) == (after["name"], after["decision"])
        assert after["shared_errors"]["repeats"] == before["shared_errors"]["repeats"]
    markdown = clone_defence.check_markdown(again)
    assert "| copycat | yes |" in markdown and "scored again" in markdown
