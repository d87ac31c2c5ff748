"""Ownership proof: is a suspect model a clone of ours? Scores, a calibrated decision, ROC/AUC.

Nakamura et al.: on probe inputs a clone g of our model f agrees with f's labels and likelihoods
far more than an independently trained model does, and its likelihoods run slightly higher (it
was trained on f's confident answers). DAWN adds a keyed test: on probes that fall in
watermarked codes our endpoint answered a deterministic wrong label; a model trained on those
answers repeats them far more often than chance.

The features are made comparable by calibration against independently trained models on
disjoint data (the null): each becomes a z-score against the null's mean and spread, and the
clone score is their mean. A suspect is called a clone when that score passes a threshold (by
default 3 null standard deviations) or the watermark's binomial test is significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from patchveil.errors import PatchveilError

FEATURES = ("label_agreement", "likelihood_similarity", "likelihood_gap")


class OwnershipError(PatchveilError):
    """A clone check was given answers or a calibration it cannot use."""


@dataclass(frozen=True)
class SuspectScores:
    """A suspect's answers on the probes, compared with ours. The likelihood features are None
    when the suspect answers labels only; the watermark ones are 0 without watermark probes."""

    probes: int
    label_agreement: float  # fraction of probes where the suspect's top-1 is ours
    likelihood_similarity: float | None  # 1 − mean total variation distance, in [0, 1]
    likelihood_gap: float | None  # mean of (suspect's top probability − ours)
    watermark_probes: int
    watermark_hits: int  # watermark probes answered with our watermark label

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


def suspect_scores(
    original_probabilities: np.ndarray,
    suspect_labels: np.ndarray,
    suspect_probabilities: np.ndarray | None = None,
    watermark_labels: np.ndarray | None = None,
) -> SuspectScores:
    """Compare a suspect's answers on the probes with our model's probabilities [N, C].

    `watermark_labels` [N]: our watermark label where a probe is a watermark probe, −1
    elsewhere (from `CloneDefence.watermark`).
    """
    ours = np.asarray(original_probabilities, dtype=np.float64)
    if ours.ndim != 2 or len(ours) == 0:
        raise OwnershipError(f"original_probabilities must be [N ≥ 1, C], got {ours.shape}")
    count = len(ours)
    theirs_labels = _labels_of(suspect_labels, "suspect_labels", count)
    agreement = float((ours.argmax(axis=1) == theirs_labels).mean())
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
    return SuspectScores(count, agreement, similarity, gap, probes, hits)


def watermark_p_value(hits: int, probes: int, chance: float) -> float:
    """P(at least `hits` of `probes` watermark labels by chance), `chance` per probe (binomial).

    `chance` is how often an independent model says our (plausible, confusable) watermark
    label anyway; take it from `NullCalibration.watermark_chance`.
    """
    if probes == 0:
        return 1.0
    return float(stats.binom.sf(hits - 1, probes, chance))


@dataclass(frozen=True)
class NullCalibration:
    """The features of independently trained models: their mean and spread per feature."""

    means: dict[str, float]
    scales: dict[str, float]
    models: int
    watermark_chance: float

    def to_json(self) -> dict[str, Any]:
        return {
            "means": self.means,
            "scales": self.scales,
            "models": self.models,
            "watermark_chance": self.watermark_chance,
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
    return NullCalibration(
        means, scales, len(independent), max(min_watermark_chance, min(chance, 1.0))
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


@dataclass(frozen=True)
class CloneDecision:
    """The verdict and why."""

    is_clone: bool
    score: float
    threshold: float
    watermark_p_value: float
    reasons: tuple[str, ...]
    scores: SuspectScores

    def to_json(self) -> dict[str, Any]:
        return {
            "is_clone": self.is_clone,
            "score": self.score,
            "threshold": self.threshold,
            "watermark_p_value": self.watermark_p_value,
            "reasons": list(self.reasons),
            "scores": self.scores.to_json(),
        }


def decide(
    scores: SuspectScores,
    calibration: NullCalibration,
    threshold: float = 3.0,
    watermark_significance: float = 1e-3,
) -> CloneDecision:
    """Clone when the clone score reaches `threshold` or the watermark test is significant."""
    score = clone_score(scores, calibration)
    p_value = watermark_p_value(
        scores.watermark_hits, scores.watermark_probes, calibration.watermark_chance
    )
    reasons = []
    if score >= threshold:
        reasons.append(
            f"answers agree with ours {score:.1f} null standard deviations beyond independent "
            f"models (threshold {threshold})"
        )
    if p_value < watermark_significance:
        reasons.append(
            f"{scores.watermark_hits} of {scores.watermark_probes} watermark answers repeated "
            f"(p = {p_value:.2g} by chance)"
        )
    return CloneDecision(bool(reasons), score, threshold, p_value, tuple(reasons), scores)


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
