"""Clone-detection monitoring: an append-only query log and a per-tenant extraction risk score.

Three signals per tenant, combined into a risk in [0, 1]:
- PRADA (Juuti et al. 2019): each new query's distance to the nearest earlier query of the same
  tenant and label, in the model's key-invariant embedding space (pixel distances between
  per-image ciphertexts mean nothing). Natural queries give roughly log-normal distances;
  synthetic cloning queries (small perturbations around a few seeds) give many tiny and a few
  large ones, so the Shapiro–Wilk W of the recent log distances drops below `prada_delta`.
- Volume: a smooth step in log-volume from `normal_volume` to `cloning_volume`, counting
  distinct images only: the same image again (under a fresh key its ciphertext is new, its
  key-invariant embedding is not) teaches a cloner nothing, so retries and re-checks cost an
  honest tenant nothing. A cloner that queries natural images (KnockoffNets, CopycatCNN) looks
  natural to PRADA; its number of distinct images is what gives it away.
- Out of distribution: the fraction of recent queries farther from the reference (training)
  embeddings than the reference points are from each other (its `ood_quantile`).

Everything runs on a random projection of the embedding to `projection_dim` dimensions, the same
projection the log keeps, so a restart rebuilds the state from the log alone. The log never holds
image bytes, a key or a full embedding. Memory per tenant is bounded by `max_history` and
`max_seen`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats

from patchveil.errors import PatchveilError
from patchveil.serve.defence import smoothstep, volume_score

_LOG_FORMAT = 1
# Fewer of the tenant's own distances than this give no reliable scale for spotting repeats.
_MIN_KNOWN_DISTANCES = 20
_REPLAYED_FIELDS = frozenset({"tenant_id", "time", "label", "projection"})


class MonitorError(PatchveilError):
    """The monitor was given settings, arrays or a log it cannot use."""


class AnswerBatch(Protocol):
    """What the monitor reads of a batch's answers (a `defence.DefendedAnswers` has them)."""

    labels: np.ndarray
    altered: np.ndarray
    watermarked: np.ndarray


@dataclass(frozen=True)
class MonitorSettings:
    """Detector settings; defaults suit a CIFAR-sized demo (normal tenants ask hundreds to a few
    thousand images, cloners tens of thousands)."""

    projection_dim: int = 16
    projection_seed: int = 0
    max_history: int = 4096  # projected embeddings kept per tenant (bounded memory)
    # Distinct images remembered per tenant for spotting repeats (float32 rows; older ones are
    # forgotten, and asked again they count as new).
    max_seen: int = 16_384
    prada_window: int = 1000  # recent nearest-query distances the normality test sees
    prada_min_queries: int = 100  # no PRADA verdict before this many distances
    prada_delta: float = 0.90  # flag when W (of log distances) < delta
    prada_clear: float = 0.97  # W at or above this adds no risk
    # A query this close to an earlier one (relative to the typical nearest-query distance) is
    # the same image again under a fresh key (~1e-7): a retry, not a step; it stays out of the
    # distances and the distinct volume.
    repeat_ratio: float = 1e-3
    # Where the label is withheld (-1: result privacy), PRADA groups queries by the nearest of
    # this many k-means centres of the reference embeddings instead (more than the classes:
    # splitting a class costs little, merging two would mix far-apart queries).
    prada_groups: int = 32
    normal_volume: int = 2_000
    cloning_volume: int = 20_000
    ood_quantile: float = 0.99  # a query is out of distribution beyond this reference quantile
    ood_window: int = 500  # recent queries the OOD fraction is taken over
    ood_min_queries: int = 50
    ood_clear_fraction: float = 0.05  # OOD fractions at or below this add no risk
    ood_alarm_fraction: float = 0.5  # ... at or above this, full OOD risk
    risk_threshold: float = 0.8  # flag when the combined risk reaches this

    def __post_init__(self) -> None:
        if self.projection_dim < 2:
            raise MonitorError(f"projection_dim must be at least 2, got {self.projection_dim}")
        if (
            self.max_history < 2
            or self.max_seen < 1
            or self.prada_window < 3
            or self.ood_window < 1
        ):
            raise MonitorError(
                "max_history ≥ 2, max_seen ≥ 1, prada_window ≥ 3 and ood_window ≥ 1 are needed"
            )
        if not 3 <= self.prada_min_queries <= self.prada_window:
            raise MonitorError("prada_min_queries must be between 3 and prada_window")
        if not 0 < self.prada_delta < self.prada_clear <= 1:
            raise MonitorError("need 0 < prada_delta < prada_clear ≤ 1")
        if not 0 < self.normal_volume < self.cloning_volume:
            raise MonitorError("need 0 < normal_volume < cloning_volume")
        if not 0 <= self.ood_clear_fraction < self.ood_alarm_fraction <= 1:
            raise MonitorError("need 0 ≤ ood_clear_fraction < ood_alarm_fraction ≤ 1")
        if self.prada_groups < 1:
            raise MonitorError(f"prada_groups must be at least 1, got {self.prada_groups}")
        if not 0 <= self.repeat_ratio < 1:
            raise MonitorError(f"repeat_ratio must be in [0, 1), got {self.repeat_ratio}")
        if not 0 < self.ood_quantile < 1 or not 0 < self.risk_threshold <= 1:
            raise MonitorError("ood_quantile must be in (0, 1) and risk_threshold in (0, 1]")


@dataclass(frozen=True)
class TenantRisk:
    """One tenant's extraction risk: the signals now; `risk` never below the risk it was first
    flagged with (`flagged_at`: its query count then), as flags are sticky."""

    tenant_id: str
    queries: int
    risk: float
    flagged: bool
    alerts: tuple[str, ...]
    prada_statistic: float | None  # W of recent log distances; None until enough
    ood_fraction: float | None  # None without reference embeddings or enough queries
    volume_score: float
    flagged_at: int | None = None
    distinct_queries: int = 0  # images not seen before from this tenant (what volume counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "queries": self.queries,
            "distinct_queries": self.distinct_queries,
            "risk": round(self.risk, 4),
            "flagged": self.flagged,
            "flagged_at": self.flagged_at,
            "alerts": list(self.alerts),
            "prada_statistic": None
            if self.prada_statistic is None
            else round(self.prada_statistic, 4),
            "ood_fraction": None if self.ood_fraction is None else round(self.ood_fraction, 4),
            "volume_score": round(self.volume_score, 4),
        }


def random_projection(dim: int, projection_dim: int, seed: int) -> np.ndarray:
    """[dim, projection_dim] Gaussian map scaled so distances are kept on average (JL)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((dim, projection_dim)) / math.sqrt(projection_dim)


def nearest_distances(
    points: np.ndarray, labels: np.ndarray, earlier: np.ndarray, earlier_labels: np.ndarray
) -> np.ndarray:
    """For each of `points` [N, d], the distance to the nearest point of the same label among
    `earlier` [M, d] and the points before it in the batch (inf when there is none).

    Same label only, as PRADA does: a tenant's natural queries of different classes are far
    apart, and mixing them would make an honest stream look bimodal.
    """
    count = len(points)
    nearest = np.full(count, np.inf)
    if len(earlier):
        squared = _squared_distances(points, earlier)
        squared[labels[:, None] != earlier_labels[None, :]] = np.inf
        nearest = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    if count > 1:
        within = _squared_distances(points, points)
        within[np.triu_indices(count)] = np.inf  # only points before each one
        within[labels[:, None] != labels[None, :]] = np.inf
        nearest = np.minimum(nearest, np.sqrt(np.maximum(within.min(axis=1), 0.0)))
    return nearest


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # The cross term by BLAS (a batch against 16k seen points: einsum's loop took ~10× longer).
    # A replay repeats each live batch's shapes, so it meets the same kernels and the same sums.
    squared = a @ b.T
    squared *= -2.0  # in place: these are [batch, 16k] arrays
    squared += np.einsum("ij,ij->i", a, a)[:, None]
    squared += np.einsum("ij,ij->i", b, b)[None, :]
    return squared


def kmeans_centres(points: np.ndarray, count: int, seed: int, rounds: int = 20) -> np.ndarray:
    """[count, d] centres of `points`: k-means++ from a seeded start, then Lloyd (deterministic)."""
    count = min(count, len(points))
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    closest = _squared_distances(points, centres[0][None, :])[:, 0]
    for _ in range(1, count):
        # Far points are likelier centres, so two classes rarely share one.
        weights = np.maximum(closest, 0.0)
        chosen = rng.choice(len(points), p=weights / weights.sum()) if weights.sum() > 0 else 0
        centres.append(points[chosen])
        closest = np.minimum(closest, _squared_distances(points, points[chosen][None, :])[:, 0])
    found = np.array(centres)
    for _ in range(rounds):
        nearest = _squared_distances(points, found).argmin(axis=1)
        for group in range(count):
            members = points[nearest == group]
            if len(members):
                found[group] = members.mean(axis=0)
    return found


def prada_statistic(distances: np.ndarray) -> float:
    """Shapiro–Wilk W of the log of positive distances (1 = log-normal; constant: 0).

    The log, unlike PRADA's raw distances: nearest-query distances in a learned embedding are
    right-skewed even for natural queries (CIFAR test images through a position-free ViT: raw
    W 0.80–0.82, which PRADA's δ = 0.9 would flag; log W ≥ 0.985), while a cloner's mix of
    tiny and large steps stays far from normal either way (log W 0.43–0.80).
    """
    values = np.asarray(distances, dtype=np.float64)
    logs = np.log(values[values > 0])  # a zero distance is a repeat, not a step
    if len(logs) < 3:
        return 0.0
    if np.ptp(logs) <= 1e-9:
        return 0.0  # the same step over and over is as un-natural as it gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on ties and large N; W is still right
        return float(stats.shapiro(logs).statistic)


@dataclass
class _TenantState:
    """PRADA's growing set (a bounded ring buffer of projected queries and their labels), the
    recent nearest-query distances and OOD verdicts, and when the tenant was first flagged."""

    history: np.ndarray  # [max_history, projection_dim]
    history_labels: np.ndarray  # [max_history]
    seen: np.ndarray  # [max_seen, projection_dim] float32: distinct images, any label
    stored: int = 0  # filled rows
    next_row: int = 0  # where the ring buffer writes next
    queries: int = 0
    distinct: int = 0  # queries that were not a repeat of an earlier one
    seen_stored: int = 0
    seen_next: int = 0
    distances: deque[float] = field(default_factory=deque)
    ood: deque[bool] = field(default_factory=deque)
    flagged_at: int | None = None
    flagged_for: tuple[str, ...] = ()
    flagged_risk: float = 0.0
    distances_added: int = 0  # ever appended to `distances`: the PRADA cache's key
    prada: tuple[int, float] | None = None  # (distances_added, W) last computed


class QueryMonitor:
    """The query log and per-tenant risk. `record` appends one JSON line per image and returns
    the tenant's risk after it; a new monitor on an existing log replays it first."""

    def __init__(
        self,
        log_path: Path | str,
        settings: MonitorSettings | None = None,
        reference_embeddings: np.ndarray | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        self.settings = settings or MonitorSettings()
        self._lock = threading.Lock()
        self._tenants: dict[str, _TenantState] = {}
        self._projection: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._ood_radius: float | None = None
        self._reference_scale: float | None = None  # median nearest-neighbour distance
        self._group_centres: np.ndarray | None = None
        self.skipped_log_lines = 0
        if reference_embeddings is not None:
            reference = np.asarray(reference_embeddings, dtype=np.float64)
            if reference.ndim != 2 or len(reference) < 2:
                raise MonitorError(
                    f"reference_embeddings must be [M ≥ 2, D], got shape {reference.shape}"
                )
            self._reference = self._project(reference)
            self._ood_radius, self._reference_scale = self._reference_radius(self._reference)
            self._group_centres = kmeans_centres(
                self._reference, self.settings.prada_groups, self.settings.projection_seed
            )
        self._replay()

    def __repr__(self) -> str:
        return f"QueryMonitor(log={str(self.log_path)!r}, tenants={len(self._tenants)})"

    # --- public ---------------------------------------------------------------------------

    def record(
        self,
        tenant_id: str,
        model_version: int,
        answers: AnswerBatch,
        embeddings: np.ndarray,
        confidences: np.ndarray,
        now: float | None = None,
    ) -> TenantRisk:
        """Log one answered batch (one line per image) and update the tenant's signals."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        labels = np.asarray(answers.labels)
        count = len(labels)
        if embeddings.ndim != 2 or len(embeddings) != count or len(confidences) != count:
            raise MonitorError(
                f"{count} answers need [{count}, D] embeddings and {count} confidences, got "
                f"{embeddings.shape} and {len(confidences)}"
            )
        if not np.isfinite(embeddings).all():
            raise MonitorError("embeddings hold NaN or infinity; the model's forward pass failed")
        moment = time.time() if now is None else float(now)
        with self._lock:
            # Rounded as the log keeps them, so a replay sees exactly the numbers seen live.
            projected = [[round(float(v), 6) for v in row] for row in self._project(embeddings)]
            lines = [
                json.dumps(
                    {
                        "v": _LOG_FORMAT,
                        "tenant_id": tenant_id,
                        "time": moment,
                        "model_version": int(model_version),
                        "label": int(labels[i]),
                        "confidence": round(float(confidences[i]), 6),
                        "altered": bool(answers.altered[i]),
                        "watermarked": bool(answers.watermarked[i]),
                        "projection": projected[i],
                    },
                    separators=(",", ":"),
                )
                for i in range(count)
            ]
            self._append(lines)
            return self._update(tenant_id, np.asarray(projected), labels.astype(np.int64))

    def risk(self, tenant_id: str) -> TenantRisk:
        with self._lock:
            return self._risk(tenant_id)

    def risks(self) -> list[TenantRisk]:
        """Every tenant seen, riskiest first."""
        with self._lock:
            found = [self._risk(tenant_id) for tenant_id in self._tenants]
        return sorted(found, key=lambda r: (-r.risk, r.tenant_id))

    def distinct_count(self, tenant_id: str) -> int:
        """Images from this tenant that were not a repeat of an earlier one."""
        with self._lock:
            state = self._tenants.get(tenant_id)
            return 0 if state is None else state.distinct

    def query_count(self, tenant_id: str) -> int:
        with self._lock:
            state = self._tenants.get(tenant_id)
            return 0 if state is None else state.queries

    # --- state ----------------------------------------------------------------------------

    def _project(self, embeddings: np.ndarray) -> np.ndarray:
        if self._projection is None:
            self._projection = random_projection(
                embeddings.shape[1], self.settings.projection_dim, self.settings.projection_seed
            )
        if embeddings.shape[1] != self._projection.shape[0]:
            raise MonitorError(
                f"embeddings are {embeddings.shape[1]}-dimensional, but this monitor projects "
                f"{self._projection.shape[0]}-dimensional ones (another model? use a new log)"
            )
        return embeddings @ self._projection

    def _reference_radius(self, reference: np.ndarray) -> tuple[float, float]:
        """The `ood_quantile` and the median of each reference point's distance to its nearest
        other one."""
        nearest = np.empty(len(reference))
        for start in range(0, len(reference), 1024):  # bounded memory for large references
            block = _squared_distances(reference[start : start + 1024], reference)
            block[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
            nearest[start : start + len(block)] = np.sqrt(np.maximum(block.min(axis=1), 0.0))
        return float(np.quantile(nearest, self.settings.ood_quantile)), float(np.median(nearest))

    def _state(self, tenant_id: str) -> _TenantState:
        state = self._tenants.get(tenant_id)
        if state is None:
            s = self.settings
            state = _TenantState(
                history=np.empty((s.max_history, s.projection_dim)),
                history_labels=np.empty(s.max_history, dtype=np.int64),
                seen=np.empty((s.max_seen, s.projection_dim), dtype=np.float32),
                distances=deque(maxlen=s.prada_window),
                ood=deque(maxlen=s.ood_window),
            )
            self._tenants[tenant_id] = state
        return state

    def _update(self, tenant_id: str, projected: np.ndarray, labels: np.ndarray) -> TenantRisk:
        state = self._state(tenant_id)
        s = self.settings
        labels = self._prada_groups(projected, labels)
        nearest = nearest_distances(
            projected,
            labels,
            state.history[: state.stored],
            state.history_labels[: state.stored],
        )
        known = np.fromiter(state.distances, dtype=np.float64)
        repeat = self._repeats(
            state, projected, s.repeat_ratio * self._typical_distance(known, nearest)
        )
        # PRADA grows its set only with queries farther than mean − std of the distances so
        # far, so near-duplicates do not crowd out the tenant's earlier queries.
        threshold = float(known.mean() - known.std()) if len(known) >= 2 else -np.inf
        novel = ~repeat & (~np.isfinite(nearest) | (nearest > threshold))
        added = nearest[~repeat & np.isfinite(nearest)]
        state.distances.extend(float(d) for d in added)
        state.distances_added += len(added)
        for point, label in zip(projected[novel], labels[novel], strict=True):
            state.history[state.next_row] = point
            state.history_labels[state.next_row] = label
            state.next_row = (state.next_row + 1) % s.max_history
            state.stored = min(s.max_history, state.stored + 1)
        if self._reference is not None:
            for start in range(0, len(projected), 1024):
                to_reference = _squared_distances(projected[start : start + 1024], self._reference)
                beyond = np.sqrt(np.maximum(to_reference.min(axis=1), 0.0)) > self._ood_radius
                state.ood.extend(bool(flag) for flag in beyond)
        state.queries += len(projected)
        state.distinct += int((~repeat).sum())
        for point in projected[~repeat]:
            state.seen[state.seen_next] = point
            state.seen_next = (state.seen_next + 1) % s.max_seen
            state.seen_stored = min(s.max_seen, state.seen_stored + 1)
        now = self._risk(tenant_id)
        if now.flagged and state.flagged_at is None:
            state.flagged_at = state.queries
            state.flagged_for = now.alerts
            state.flagged_risk = now.risk
            now = self._risk(tenant_id)
        return now

    @staticmethod
    def _repeats(state: _TenantState, projected: np.ndarray, radius: float) -> np.ndarray:
        """Which queries lie within `radius` of an image this tenant asked before (any label:
        PRADA's set keeps only some queries, and a label can be an intentional error)."""
        count = len(projected)
        repeat = np.zeros(count, dtype=bool)
        if radius <= 0:
            return repeat
        limit = radius * radius
        if state.seen_stored:
            seen = state.seen[: state.seen_stored].astype(np.float64)
            for start in range(0, count, 256):
                block = _squared_distances(projected[start : start + 256], seen)
                repeat[start : start + 256] = block.min(axis=1) <= limit
        if count > 1:
            within = _squared_distances(projected, projected)
            within[np.triu_indices(count)] = np.inf  # only points before each one
            repeat |= within.min(axis=1) <= limit
        return repeat

    def _typical_distance(self, known: np.ndarray, nearest: np.ndarray) -> float:
        """The scale repeats are measured against: the tenant's median nearest-query distance
        once it has some, else the reference's, else this batch's (a tenant's first batch may
        already hold the same image twice)."""
        if len(known) >= _MIN_KNOWN_DISTANCES:
            return float(np.median(known))
        if self._reference_scale is not None:
            return self._reference_scale
        finite = nearest[np.isfinite(nearest)]
        if len(known) + len(finite) == 0:
            return 0.0
        return float(np.median(np.concatenate([known, finite])))

    def _prada_groups(self, projected: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The label where logged; where withheld (< 0), -1 − the nearest reference centre (all
        -1 without a reference). A function of the log alone, so a replay groups alike."""
        withheld = labels < 0
        if not withheld.any() or self._group_centres is None:
            return labels
        groups = labels.copy()
        centre = _squared_distances(projected[withheld], self._group_centres).argmin(axis=1)
        groups[withheld] = -1 - centre
        return groups

    def _risk(self, tenant_id: str) -> TenantRisk:
        s = self.settings
        state = self._tenants.get(tenant_id)
        if state is None:
            return TenantRisk(tenant_id, 0, 0.0, False, (), None, None, 0.0)
        alerts: list[str] = []
        prada: float | None = None
        prada_score = 0.0
        if len(state.distances) >= s.prada_min_queries:
            # Shapiro–Wilk is most of a request's monitoring time: once per new distances.
            if state.prada is None or state.prada[0] != state.distances_added:
                values = np.fromiter(state.distances, dtype=np.float64)
                state.prada = (state.distances_added, prada_statistic(values))
            prada = state.prada[1]
            prada_score = smoothstep((s.prada_clear - prada) / (s.prada_clear - s.prada_delta))
            if prada < s.prada_delta:
                alerts.append(
                    f"prada: W={prada:.3f} < {s.prada_delta} over the last "
                    f"{len(state.distances)} nearest-query distances"
                )
        ood_fraction: float | None = None
        ood_score = 0.0
        if self._reference is not None and len(state.ood) >= s.ood_min_queries:
            ood_fraction = sum(state.ood) / len(state.ood)
            ood_score = smoothstep(
                (ood_fraction - s.ood_clear_fraction)
                / (s.ood_alarm_fraction - s.ood_clear_fraction)
            )
            if ood_fraction >= s.ood_alarm_fraction:
                alerts.append(
                    f"ood: {ood_fraction:.0%} of the last {len(state.ood)} queries lie outside "
                    "the training distribution"
                )
        volume = volume_score(state.distinct, s.normal_volume, s.cloning_volume)
        if volume >= s.risk_threshold:
            alerts.append(
                f"volume: {state.distinct} distinct images (score {volume:.2f}; cloning volume "
                f"{s.cloning_volume})"
            )
        # Noisy-OR: any one signal at full strength is enough; weak signals add up.
        risk = 1.0 - (1.0 - prada_score) * (1.0 - ood_score) * (1.0 - volume)
        if risk >= s.risk_threshold and not alerts:
            alerts.append(f"risk: {risk:.2f} ≥ {s.risk_threshold} from weaker signals together")
        if state.flagged_at is not None:
            # Flagged stays flagged: a cloner whose recent queries look natural again keeps the
            # risk (and so the α) it was flagged with.
            risk = max(risk, state.flagged_risk)
            if not alerts:
                alerts.extend(
                    f"earlier, at {state.flagged_at} queries: {a}" for a in state.flagged_for
                )
        flagged = bool(alerts)
        return TenantRisk(
            tenant_id=tenant_id,
            queries=state.queries,
            risk=float(risk),
            flagged=flagged,
            alerts=tuple(alerts),
            prada_statistic=prada,
            ood_fraction=ood_fraction,
            volume_score=volume,
            flagged_at=state.flagged_at,
            distinct_queries=state.distinct,
        )

    # --- the log --------------------------------------------------------------------------

    def _append(self, lines: list[str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One O_APPEND write per batch, so concurrent writers interleave whole batches.
        descriptor = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, ("\n".join(lines) + "\n").encode())
        finally:
            os.close(descriptor)

    def _records(self) -> Iterator[dict[str, Any]]:
        with self.log_path.open("rb") as log:
            for raw in log:
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or not record.keys() >= _REPLAYED_FIELDS:
                    # A line cut short by a crash; the records around it still count.
                    self.skipped_log_lines += 1
                    continue
                yield record

    def _replay(self) -> None:
        if not self.log_path.exists():
            return
        self._repair_tail()
        # One batch's lines share tenant and time: replaying batch by batch gives the same
        # distances and the same `flagged_at` as the live run did.
        batch: tuple[str, float] | None = None
        rows: list[list[float]] = []
        labels: list[int] = []
        for record in self._records():
            key = (str(record["tenant_id"]), float(record["time"]))
            if key != batch and rows:
                self._replay_batch(batch[0], rows, labels)  # type: ignore[index]
                rows, labels = [], []
            batch = key
            rows.append(record["projection"])
            labels.append(int(record["label"]))
        if rows:
            self._replay_batch(batch[0], rows, labels)  # type: ignore[index]

    def _replay_batch(self, tenant_id: str, rows: list[list[float]], labels: list[int]) -> None:
        projected = np.asarray(rows, dtype=np.float64)
        if projected.ndim != 2 or projected.shape[1] != self.settings.projection_dim:
            raise MonitorError(
                f"{self.log_path} holds {projected.shape[-1]}-dimensional projections; this "
                f"monitor uses {self.settings.projection_dim} (start a new log for new settings)"
            )
        self._update(tenant_id, projected, np.asarray(labels, dtype=np.int64))

    def _repair_tail(self) -> None:
        """End a line a crash cut short, so the next record starts on a line of its own."""
        with self.log_path.open("rb+") as log:
            log.seek(0, os.SEEK_END)
            if log.tell() == 0:
                return
            log.seek(-1, os.SEEK_END)
            if log.read(1) != b"\n":
                log.write(b"\n")
