"""Ownership proof: is a suspect model a clone of ours? Shared errors, watermark, scores, ROC.

The verdict rests on shared errors (IPGuard, Nakamura et al.'s label agreement, conferrable
fingerprints): a clone trained on our answers repeats our model's particular mistakes, where an
independently trained model makes its own. The suspect and the null models (independently
trained, answering the same probes) form a group, and every member is scored the same way,
against the others: an *error of ours* for a member is a probe where fewer than half of the
group's other members give our label (our answer is idiosyncratic) and, when the operator gives
the probes' true labels, our label is wrong; the member *repeats* it by giving our label.

The test compares the suspect's k repeats of its n errors of ours with the null models' rate μ,
pooled over their answers (hundreds, not 3–4 numbers), by a one-sided overdispersed binomial
(beta-binomial) test. Overdispersed because independent models differ in how much they resemble
ours (their accuracy, their class biases): on 15 independently trained CNNs of the demo's
recipe, an exact test that treats every probe answer as independent (a per-probe permutation
test) called up to 2.3% of them clones at a nominal 1e-3. Between models a rate varies with
intra-model correlation ρ (variance ρμ(1 − μ)); ρ is the null models' estimate but never below
`min_model_correlation` (0.005, from those 15 models: with it, in 3,200 random groups of a
suspect and 1–4 null models none was called a clone at 1e-3, and with 3–4 null models at most
the nominal share at 5% and 1%; with 2, 6% and 1.8%). The variance also grows by (1 + 1/M) for
μ's own estimate from M models.

Decision: a clone when the shared-error p ≤ `significance` (default 1e-3) or the watermark's
binomial p ≤ `watermark_significance` (1e-3): DAWN's keyed test, where our endpoint answered a
deterministic wrong label on watermarked probes and a model trained on those answers repeats
it. The false-positive level is at most the sum of the two. The mean z-score of label
agreement, likelihood similarity and likelihood gap against the null models' mean and spread
(Nakamura et al.) is reported with its `threshold` but does not decide: with 3–4 null models
its spread is itself a guess, and near the threshold it named clones one run and missed them
the next.

What the p-value assumes: the null models are drawn like an honest competitor would be.
Without true labels, "errors" include probes where we are right and the null models wrong, so
a suspect much more accurate than the null models can look like a clone: give true labels, or
null models as good as any competitor that must be cleared. A model sharing our architecture
and training data makes our mistakes honestly; no black-box test tells it from a clone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats

from patchveil.errors import PatchveilError

FEATURES = ("label_agreement", "likelihood_similarity", "likelihood_gap")
SHARED_ERROR_SIGNIFICANCE = 1e-3
WATERMARK_SIGNIFICANCE = 1e-3
MIN_MODEL_CORRELATION = 0.005


class OwnershipError(PatchveilError):
    """A clone check was given answers or a calibration it cannot use."""


@dataclass(frozen=True)
class SuspectScores:
    """A suspect's answers on the probes, compared with ours. The likelihood features are None
    when the suspect answers labels only; the watermark ones are 0 without watermark probes.
    The per-probe labels (ours, the suspect's, the true ones if known) feed the shared-error
    test and stay out of `to_json`."""

    probes: int
    label_agreement: float  # fraction of probes where the suspect's top-1 is ours
    likelihood_similarity: float | None  # 1 − mean total variation distance, in [0, 1]
    likelihood_gap: float | None  # mean of (suspect's top probability − ours)
    watermark_probes: int
    watermark_hits: int  # watermark probes answered with our watermark label
    our_labels: tuple[int, ...] = field(default=(), repr=False)
    labels: tuple[int, ...] = field(default=(), repr=False)
    true_labels: tuple[int, ...] | None = field(default=None, repr=False)

    def feature(self, name: str) -> float | None:
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        return {
            "probes": self.probes,
            "label_agreement": self.label_agreement,
            "likelihood_similarity": self.likelihood_similarity,
            "likelihood_gap": self.likelihood_gap,
            "watermark_probes": self.watermark_probes,
            "watermark_hits": self.watermark_hits,
        }


def _labels_of(array: np.ndarray, name: str, count: int) -> np.ndarray:
    labels = np.asarray(array)
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise OwnershipError(f"{name} must be {count} integer labels, got {labels.shape}")
    return labels.astype(np.int64)


def _as_tuple(labels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(label) for label in labels)


def suspect_scores(
    original_probabilities: np.ndarray,
    suspect_labels: np.ndarray,
    suspect_probabilities: np.ndarray | None = None,
    watermark_labels: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
) -> SuspectScores:
    """Compare a suspect's answers on the probes with our model's probabilities [N, C].

    `watermark_labels` [N]: our watermark label where a probe is a watermark probe, −1
    elsewhere (from `CloneDefence.watermark`). `true_labels` [N]: the probes' true labels, when
    the operator has them (the shared-error test then counts only our wrong answers).
    """
    ours = np.asarray(original_probabilities, dtype=np.float64)
    if ours.ndim != 2 or len(ours) == 0:
        raise OwnershipError(f"original_probabilities must be [N ≥ 1, C], got {ours.shape}")
    count = len(ours)
    our_labels = ours.argmax(axis=1)
    theirs_labels = _labels_of(suspect_labels, "suspect_labels", count)
    agreement = float((our_labels == theirs_labels).mean())
    similarity = gap = None
    if suspect_probabilities is not None:
        theirs = np.asarray(suspect_probabilities, dtype=np.float64)
        if theirs.shape != ours.shape:
            raise OwnershipError(
                f"suspect_probabilities must match ours {ours.shape}, got {theirs.shape}"
            )
        similarity = float(1.0 - 0.5 * np.abs(ours - theirs).sum(axis=1).mean())
        gap = float((theirs.max(axis=1) - ours.max(axis=1)).mean())
    probes = hits = 0
    if watermark_labels is not None:
        marks = _labels_of(watermark_labels, "watermark_labels", count)
        chosen = marks >= 0
        probes = int(chosen.sum())
        hits = int((theirs_labels[chosen] == marks[chosen]).sum())
    truth = None
    if true_labels is not None:
        truth = _as_tuple(_labels_of(true_labels, "true_labels", count))
    return SuspectScores(
        count,
        agreement,
        similarity,
        gap,
        probes,
        hits,
        _as_tuple(our_labels),
        _as_tuple(theirs_labels),
        truth,
    )


def watermark_p_value(hits: int, probes: int, chance: float) -> float:
    """P(at least `hits` of `probes` watermark labels by chance), `chance` per probe (binomial).

    `chance` is how often an independent model says our (plausible, confusable) watermark
    label anyway; take it from `NullCalibration.watermark_chance`.
    """
    if probes == 0:
        return 1.0
    return float(stats.binom.sf(hits - 1, probes, chance))


def errors_of_ours(
    our_labels: np.ndarray, group_labels: np.ndarray, true_labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each model k of a group [K ≥ 2, N] and probe i: is it an error of ours for k, and
    does k repeat it; both [K, N] bool.

    An error of ours for model k: fewer than half of the group's other K − 1 models give our
    label there and, with `true_labels`, our label is wrong. k repeats it by giving our label.
    Every model is scored the same way against the others, so an independent suspect and an
    independent null model have the same expected rate.
    """
    ours = np.asarray(our_labels, dtype=np.int64)
    group = np.asarray(group_labels, dtype=np.int64)
    if group.ndim != 2 or group.shape[1] != len(ours) or len(group) < 2:
        raise OwnershipError(
            f"a group of ≥ 2 models' labels on {len(ours)} probes is needed, got {group.shape}"
        )
    agrees = group == ours[None, :]
    others_agreeing = agrees.sum(axis=0)[None, :] - agrees
    eligible = 2 * others_agreeing < len(group) - 1
    if true_labels is not None:
        eligible &= (ours != np.asarray(true_labels, dtype=np.int64))[None, :]
    return eligible, eligible & agrees


def model_correlation(repeats: np.ndarray, trials: np.ndarray) -> float:
    """Intra-model correlation ρ of a rate across models (method of moments): how much more
    the models' rates k_m / n_m spread than binomial noise alone would make them."""
    repeats = np.asarray(repeats, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if len(trials) < 2 or (trials == 0).any():
        return 0.0
    rate = repeats.sum() / trials.sum()
    if rate in (0.0, 1.0):
        return 0.0
    binomial = rate * (1 - rate) * float(np.mean(1 / trials))
    between = float(np.var(repeats / trials, ddof=1)) - binomial
    return max(0.0, between / (rate * (1 - rate)))


def overdispersed_binomial_tail(
    successes: int, trials: int, rate: float, correlation: float
) -> float:
    """P(at least `successes` of `trials`) when each model's rate varies around `rate` with
    intra-model correlation `correlation` (beta-binomial; 0: the plain binomial)."""
    if not 0 <= rate <= 1 or not 0 <= correlation < 1:
        raise OwnershipError(
            f"need a rate in [0, 1] and a correlation in [0, 1), got {rate}, {correlation}"
        )
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if correlation == 0 or rate in (0.0, 1.0):
        return float(stats.binom.sf(successes - 1, trials, rate))
    spread = (1 - correlation) / correlation
    counts = np.arange(successes, trials + 1)
    # The tail summed from its terms (scipy's sf is 1 − cdf here, which loses p < 1e-16).
    log_terms = stats.betabinom.logpmf(counts, trials, rate * spread, (1 - rate) * spread)
    return float(min(1.0, np.exp(special.logsumexp(log_terms))))


@dataclass(frozen=True)
class SharedErrors:
    """The shared-error test: how often the suspect repeats our errors, against the null."""

    error_probes: int  # probes where the suspect could repeat an error of ours
    repeats: int  # of those, the probes it answered with our label
    null_error_probes: int  # the same summed over the null models (each scored like it)
    null_repeats: int
    null_models: int
    model_correlation: float  # ρ: max(the null models' estimate, the floor)
    p_value: float  # P(this many repeats or more | one more independent model)
    true_labels: bool  # errors judged against true labels too, not only against the others

    @property
    def rate(self) -> float:
        return self.repeats / self.error_probes if self.error_probes else 0.0

    @property
    def null_rate(self) -> float:
        return self.null_repeats / self.null_error_probes if self.null_error_probes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "error_probes": self.error_probes,
            "repeats": self.repeats,
            "rate": self.rate,
            "null_error_probes": self.null_error_probes,
            "null_repeats": self.null_repeats,
            "null_rate": self.null_rate,
            "null_models": self.null_models,
            "model_correlation": self.model_correlation,
            "p_value": self.p_value,
            "true_labels": self.true_labels,
        }


def shared_error_test(
    our_labels: np.ndarray,
    suspect_labels: np.ndarray,
    null_labels: np.ndarray,
    true_labels: np.ndarray | None = None,
    min_model_correlation: float = MIN_MODEL_CORRELATION,
) -> SharedErrors:
    """Does the suspect repeat our errors more than independently trained models do?

    `null_labels` [M ≥ 1, N]: the null models' labels on the same probes. The suspect's
    repeats are tested against the null models' pooled rate, overdispersed by their intra-model
    correlation (never below `min_model_correlation`), the variance widened by (1 + 1/M) for
    the rate's own estimate (module docstring).
    """
    ours = np.asarray(our_labels, dtype=np.int64)
    nulls = np.asarray(null_labels, dtype=np.int64)
    if nulls.ndim != 2 or len(nulls) == 0:
        raise OwnershipError(f"null_labels must be [M ≥ 1, N], got {nulls.shape}")
    suspect = _labels_of(suspect_labels, "suspect_labels", len(ours))
    truth = None if true_labels is None else _labels_of(true_labels, "true_labels", len(ours))
    eligible, repeats = errors_of_ours(ours, np.vstack([suspect[None, :], nulls]), truth)
    trials, successes = eligible.sum(axis=1), repeats.sum(axis=1)
    null_trials, null_successes = int(trials[1:].sum()), int(successes[1:].sum())
    # Half an answer each way: null models that never repeat do not make one repeat damning.
    rate = (null_successes + 0.5) / (null_trials + 1)
    correlation = max(min_model_correlation, model_correlation(successes[1:], trials[1:]))
    count, found = int(trials[0]), int(successes[0])
    # The variance factor 1 + (n − 1)ρ, times 1 + 1/M for the pooled rate's own spread.
    widened = (1 + (count - 1) * correlation) * (1 + 1 / len(nulls))
    effective = min((widened - 1) / (count - 1), 0.99) if count > 1 else 0.0
    return SharedErrors(
        error_probes=count,
        repeats=found,
        null_error_probes=null_trials,
        null_repeats=null_successes,
        null_models=len(nulls),
        model_correlation=correlation,
        p_value=overdispersed_binomial_tail(found, count, rate, effective),
        true_labels=truth is not None,
    )


@dataclass(frozen=True)
class NullCalibration:
    """The null: independently trained models' features (mean and spread per feature), their
    watermark chance and their labels on the probes (for the shared-error test)."""

    means: dict[str, float]
    scales: dict[str, float]
    models: int
    watermark_chance: float
    null_labels: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "means": self.means,
            "scales": self.scales,
            "models": self.models,
            "watermark_chance": self.watermark_chance,
            "null_labels": [list(labels) for labels in self.null_labels],
        }


def calibrate(
    independent: Sequence[SuspectScores],
    min_scale: float = 0.02,
    min_watermark_chance: float = 0.05,
) -> NullCalibration:
    """The null from independently trained models' scores on the same probes.

    The spread is floored at `min_scale` (few null models underestimate it; a tiny spread
    would turn any wobble into a large z), and the watermark chance at `min_watermark_chance`
    (an unlucky null with no hits must not make one chance hit look damning).
    """
    if not independent:
        raise OwnershipError("calibration needs at least one independently trained model")
    if len({s.probes for s in independent}) != 1:
        raise OwnershipError("the null models were scored on different numbers of probes")
    means: dict[str, float] = {}
    scales: dict[str, float] = {}
    for name in FEATURES:
        values = [s.feature(name) for s in independent if s.feature(name) is not None]
        if values:
            means[name] = float(np.mean(values))
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            scales[name] = max(spread, min_scale)
    probes = sum(s.watermark_probes for s in independent)
    hits = sum(s.watermark_hits for s in independent)
    # The upper end of the null's hit rate (add-one smoothing), so calls err on the safe side.
    chance = (hits + 1) / (probes + 2) if probes else 0.0
    null_labels = tuple(s.labels for s in independent) if all(s.labels for s in independent) else ()
    return NullCalibration(
        means,
        scales,
        len(independent),
        max(min_watermark_chance, min(chance, 1.0)),
        null_labels,
    )


def clone_score(scores: SuspectScores, calibration: NullCalibration) -> float:
    """Mean z-score of the suspect's features against the null (larger: more clone-like)."""
    z = [
        (value - calibration.means[name]) / calibration.scales[name]
        for name in FEATURES
        if (value := scores.feature(name)) is not None and name in calibration.means
    ]
    if not z:
        raise OwnershipError(
            "no feature of the suspect was calibrated; calibrate on the same probes"
        )
    return float(np.mean(z))


def shared_errors_of(
    scores: SuspectScores,
    calibration: NullCalibration,
    min_model_correlation: float = MIN_MODEL_CORRELATION,
) -> SharedErrors:
    """The shared-error test of a suspect's scores against the null models' labels."""
    if not calibration.null_labels or not scores.labels:
        raise OwnershipError(
            "the shared-error test needs the null models' labels per probe and the suspect's: "
            "build both with suspect_scores and calibrate"
        )
    if len(calibration.null_labels[0]) != scores.probes:
        raise OwnershipError(
            f"the null models answered {len(calibration.null_labels[0])} probes, the suspect "
            f"{scores.probes}; calibrate on the same probes"
        )
    return shared_error_test(
        np.asarray(scores.our_labels),
        np.asarray(scores.labels),
        np.asarray(calibration.null_labels),
        None if scores.true_labels is None else np.asarray(scores.true_labels),
        min_model_correlation,
    )


@dataclass(frozen=True)
class CloneDecision:
    """The verdict and why. `score` (the mean z) and `threshold` are reported, not deciding."""

    is_clone: bool
    score: float
    threshold: float
    watermark_p_value: float
    reasons: tuple[str, ...]
    scores: SuspectScores
    shared_errors: SharedErrors
    significance: float

    def to_json(self) -> dict[str, Any]:
        return {
            "is_clone": self.is_clone,
            "score": self.score,
            "threshold": self.threshold,
            "watermark_p_value": self.watermark_p_value,
            "shared_errors": self.shared_errors.to_json(),
            "significance": self.significance,
            "reasons": list(self.reasons),
            "scores": self.scores.to_json(),
        }


def decide(
    scores: SuspectScores,
    calibration: NullCalibration,
    threshold: float = 3.0,
    watermark_significance: float = WATERMARK_SIGNIFICANCE,
    significance: float = SHARED_ERROR_SIGNIFICANCE,
    min_model_correlation: float = MIN_MODEL_CORRELATION,
) -> CloneDecision:
    """Clone when the shared-error test's p ≤ `significance` or the watermark test's p ≤
    `watermark_significance`. The mean z-score is computed and reported with `threshold`
    (the z that used to decide) but does not decide (module docstring)."""
    if not 0 < significance < 1 or not 0 < watermark_significance < 1:
        raise OwnershipError("significance levels must lie in (0, 1)")
    score = clone_score(scores, calibration)
    shared = shared_errors_of(scores, calibration, min_model_correlation)
    p_value = watermark_p_value(
        scores.watermark_hits, scores.watermark_probes, calibration.watermark_chance
    )
    errors = "wrong answers" if shared.true_labels else "answers the other models do not give"
    reasons = []
    if shared.p_value <= significance:
        reasons.append(
            f"repeats {shared.repeats} of our {shared.error_probes} {errors} ({shared.rate:.1%}; "
            f"{shared.null_models} independent models {shared.null_rate:.1%}; "
            f"p = {shared.p_value:.2g} ≤ {significance:g})"
        )
    if p_value <= watermark_significance:
        reasons.append(
            f"{scores.watermark_hits} of {scores.watermark_probes} watermark answers repeated "
            f"(p = {p_value:.2g} by chance)"
        )
    return CloneDecision(
        bool(reasons), score, threshold, p_value, tuple(reasons), scores, shared, significance
    )


def threshold_at_false_positive_rate(null_scores: np.ndarray, false_positive_rate: float) -> float:
    """The smallest threshold at which at most `false_positive_rate` of null scores pass."""
    null_scores = np.sort(np.asarray(null_scores, dtype=np.float64))
    if len(null_scores) == 0 or not 0 <= false_positive_rate < 1:
        raise OwnershipError("need null scores and a false positive rate in [0, 1)")
    allowed = math.floor(false_positive_rate * len(null_scores))
    # Strictly above the (allowed+1)-th largest null score.
    return float(np.nextafter(null_scores[len(null_scores) - allowed - 1], np.inf))


def roc_curve(
    scores: np.ndarray, is_clone: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates, thresholds), calling `score ≥ threshold` a
    clone, thresholds falling; starts at (0, 0) with an infinite threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(is_clone, dtype=bool)
    if scores.shape != truth.shape or truth.all() or not truth.any():
        raise OwnershipError("ROC needs one score per suspect and both clones and non-clones")
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    # The last index of each run of equal scores: ties move together.
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(truth)[last]
    false_positives = np.cumsum(~truth)[last]
    tpr = np.r_[0.0, true_positives / truth.sum()]
    fpr = np.r_[0.0, false_positives / (~truth).sum()]
    return fpr, tpr, np.r_[np.inf, scores[last]]


def auc(scores: np.ndarray, is_clone: np.ndarray) -> float:
    """Area under the ROC curve: P(a clone scores above a non-clone), ties counting half."""
    fpr, tpr, _ = roc_curve(scores, is_clone)
    return float(np.trapezoid(tpr, fpr))
