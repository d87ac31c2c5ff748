"""Tests for the query log and the per-tenant risk: PRADA, volume, OOD, restarts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.defence import DefenceSettings, intentional_error_rate
from patchveil.serve.monitor import MonitorSettings, QueryMonitor, prada_statistic

DIM = 192
CLASSES = 10
BATCH = 50
CENTRES = np.random.default_rng(0).standard_normal((CLASSES, DIM)) * 3.0


@dataclass(frozen=True)
class Answers:
    labels: np.ndarray
    altered: np.ndarray
    watermarked: np.ndarray


def natural(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of natural images: a Gaussian mixture, one component per class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    return CENTRES[labels] + rng.standard_normal((count, DIM)), labels


def perturbed_seeds(count: int, seed: int, seeds: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A cloner's synthetic queries: small perturbations around a few natural seed images."""
    rng = np.random.default_rng(seed)
    points, labels = natural(seeds, seed + 1000)
    chosen = rng.integers(0, seeds, count)
    return points[chosen] + 0.05 * rng.standard_normal((count, DIM)), labels[chosen]


def send(
    monitor: QueryMonitor,
    tenant_id: str,
    points: np.ndarray,
    labels: np.ndarray,
    start_time: float = 1_000.0,
) -> list:
    risks = []
    for batch, start in enumerate(range(0, len(points), BATCH)):
        rows = slice(start, start + BATCH)
        count = len(labels[rows])
        answers = Answers(labels[rows], np.zeros(count, bool), np.zeros(count, bool))
        risks.append(
            monitor.record(
                tenant_id, 3, answers, points[rows], np.full(count, 0.9), start_time + batch
            )
        )
    return risks


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return natural(1000, seed=99)[0]


def test_prada_flags_a_cloning_stream_but_not_a_benign_one(
    tmp_path: Path, reference: np.ndarray
) -> None:
    monitor = QueryMonitor(tmp_path / "queries.jsonl", reference_embeddings=reference)
    benign = send(monitor, "honest", *natural(1000, seed=1))
    send(monitor, "cloner", *perturbed_seeds(1000, seed=2))
    assert not any(risk.flagged for risk in benign)
    assert min(r.prada_statistic for r in benign if r.prada_statistic is not None) > 0.95
    assert benign[-1].risk < 0.3
    final = monitor.risk("cloner")
    assert final.flagged and final.flagged_at is not None and final.flagged_at <= 300
    assert any("prada" in alert for alert in final.alerts)
    # Sticky: later natural-looking distances do not lower the risk the defence's α reads.
    assert final.risk == pytest.approx(1.0)
    assert intentional_error_rate(final.queries, DefenceSettings(), final.risk) == pytest.approx(
        DefenceSettings().max_error_rate
    )
    assert [r.tenant_id for r in monitor.risks()] == ["cloner", "honest"]


def test_prada_works_when_result_privacy_withholds_the_label(
    tmp_path: Path, reference: np.ndarray
) -> None:
    log = tmp_path / "queries.jsonl"
    monitor = QueryMonitor(log, reference_embeddings=reference)
    points, _ = natural(800, seed=16)
    benign = send(monitor, "private", points, np.full(800, -1))
    assert not any(risk.flagged for risk in benign)
    seeds, _ = perturbed_seeds(600, seed=17)
    assert send(monitor, "private-cloner", seeds, np.full(600, -1))[-1].flagged
    again = QueryMonitor(log, reference_embeddings=reference)
    assert again.risk("private").to_json() == monitor.risk("private").to_json()


def test_out_of_distribution_queries_raise_the_risk(tmp_path: Path, reference: np.ndarray) -> None:
    monitor = QueryMonitor(tmp_path / "queries.jsonl", reference_embeddings=reference)
    noise = np.random.default_rng(4).standard_normal((300, DIM)) * 4.0
    risk = send(monitor, "prober", noise, np.zeros(300, dtype=np.int64))[-1]
    assert risk.ood_fraction is not None and risk.ood_fraction > 0.9
    assert risk.risk == pytest.approx(1.0) and risk.flagged
    honest = send(monitor, "honest", *natural(300, seed=5))[-1]
    assert honest.ood_fraction is not None and honest.ood_fraction < 0.05


def test_volume_alone_flags_a_heavy_tenant(tmp_path: Path) -> None:
    settings = MonitorSettings(normal_volume=200, cloning_volume=1000)
    monitor = QueryMonitor(tmp_path / "queries.jsonl", settings)
    risks = send(monitor, "heavy", *natural(1100, seed=6))
    assert risks[3].volume_score == 0.0 and not risks[3].flagged
    assert risks[-1].volume_score == 1.0 and risks[-1].flagged
    assert any("volume" in alert for alert in risks[-1].alerts)
    assert min(r.risk for r in risks) >= 0.0 and max(r.risk for r in risks) <= 1.0


def test_the_log_survives_a_restart_and_a_cut_line(tmp_path: Path, reference: np.ndarray) -> None:
    log = tmp_path / "serve" / "queries.jsonl"
    first = QueryMonitor(log, reference_embeddings=reference)
    send(first, "honest", *natural(400, seed=7))
    send(first, "cloner", *perturbed_seeds(400, seed=8))
    before = {r.tenant_id: r.to_json() for r in first.risks()}
    with log.open("ab") as handle:
        handle.write(b'{"v":1,"tenant_id":"cloner","ti')  # a crash mid-line
    again = QueryMonitor(log, reference_embeddings=reference)
    assert {r.tenant_id: r.to_json() for r in again.risks()} == before
    assert again._tenants["cloner"].distances == first._tenants["cloner"].distances  # exactly
    assert again.query_count("cloner") == 400 and again.query_count("nobody") == 0
    assert again.skipped_log_lines == 1
    send(again, "honest", *natural(50, seed=9), start_time=5_000.0)
    assert QueryMonitor(log).query_count("honest") == 450


def test_the_log_holds_no_image_bytes_key_or_embedding(tmp_path: Path) -> None:
    log = tmp_path / "queries.jsonl"
    monitor = QueryMonitor(log)
    points, labels = natural(20, seed=10)
    send(monitor, "t", points, labels)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 20
    for record in records:
        assert set(record) == {
            "v",
            "tenant_id",
            "time",
            "model_version",
            "label",
            "confidence",
            "altered",
            "watermarked",
            "projection",
        }
        assert len(record["projection"]) == monitor.settings.projection_dim
    assert log.stat().st_size < 20 * 400  # a few hundred bytes a query, no image in sight
    assert (log.stat().st_mode & 0o777) == 0o600


def test_memory_per_tenant_is_bounded(tmp_path: Path) -> None:
    settings = MonitorSettings(max_history=256, prada_window=200, prada_min_queries=50)
    monitor = QueryMonitor(tmp_path / "queries.jsonl", settings)
    send(monitor, "busy", *natural(1000, seed=11))
    state = monitor._tenants["busy"]
    assert state.stored <= 256 and len(state.history) == 256
    assert len(state.distances) <= 200
    assert monitor.query_count("busy") == 1000


def test_prada_statistic_reads_log_normal_and_bimodal_samples() -> None:
    rng = np.random.default_rng(12)
    assert prada_statistic(rng.lognormal(1.0, 0.3, 500)) > 0.98
    bimodal = np.r_[rng.normal(0.1, 0.01, 450), rng.normal(8.0, 1.0, 50)]
    assert prada_statistic(bimodal) < 0.6
    assert prada_statistic(np.full(100, 3.0)) == 0.0


def test_a_retried_batch_is_not_a_cloning_step(tmp_path: Path) -> None:
    monitor = QueryMonitor(tmp_path / "queries.jsonl")
    points, labels = natural(600, seed=14)
    send(monitor, "honest", points, labels)
    # The same 100 images again (fresh keys: the invariant embedding moves by ~1e-7).
    again = points[:100] * (1 + 1e-7 * np.random.default_rng(15).standard_normal((100, DIM)))
    risk = send(monitor, "honest", again, labels[:100], start_time=9_000.0)[-1]
    assert not risk.flagged and risk.prada_statistic > 0.95
    assert risk.queries == 700


def test_bad_input_is_refused(tmp_path: Path) -> None:
    monitor = QueryMonitor(tmp_path / "queries.jsonl")
    send(monitor, "t", *natural(10, seed=13))
    answers = Answers(np.zeros(2, np.int64), np.zeros(2, bool), np.zeros(2, bool))
    with pytest.raises(PatchveilError, match="dimensional"):
        monitor.record("t", 3, answers, np.zeros((2, 64)), np.ones(2))
    with pytest.raises(PatchveilError, match="NaN"):
        monitor.record("t", 3, answers, np.full((2, DIM), np.nan), np.ones(2))
    with pytest.raises(PatchveilError, match="confidences"):
        monitor.record("t", 3, answers, np.zeros((2, DIM)), np.ones(3))
    with pytest.raises(PatchveilError):
        MonitorSettings(prada_delta=0.99, prada_clear=0.95)
    with pytest.raises(PatchveilError):
        QueryMonitor(tmp_path / "other.jsonl", reference_embeddings=np.zeros(5))


def test_the_same_images_again_from_the_first_batch_on_are_neither_steps_nor_volume(
    tmp_path: Path,
) -> None:
    """A tenant re-asking its images (fresh keys: embeddings move by ~1e-7), even inside its
    very first batch, adds no PRADA distances and no distinct volume; a new image does."""
    settings = MonitorSettings(normal_volume=200, cloning_volume=1000)
    monitor = QueryMonitor(tmp_path / "queries.jsonl", settings)
    points, labels = natural(250, seed=16)
    rng = np.random.default_rng(17)
    chosen = rng.integers(0, len(points), 3000)  # 3000 queries of 250 images, in random order
    noisy = points[chosen] * (1 + 1e-7 * rng.standard_normal((len(chosen), DIM)))
    risks = send(monitor, "repeater", noisy, labels[chosen])
    final = risks[-1]
    assert final.queries == 3000
    assert final.distinct_queries == len(np.unique(chosen))
    assert not any(r.flagged for r in risks)
    assert final.prada_statistic is not None and final.prada_statistic > 0.95
    assert final.volume_score < 0.2
    # The same count of distinct images is a cloning volume.
    heavy = send(monitor, "heavy", *natural(1000, seed=18))[-1]
    assert heavy.distinct_queries == 1000 and heavy.flagged


def test_repeats_are_recognised_on_the_reference_scale_before_the_tenant_has_one(
    tmp_path: Path, reference: np.ndarray
) -> None:
    monitor = QueryMonitor(tmp_path / "queries.jsonl", reference_embeddings=reference)
    points, labels = natural(10, seed=19)
    twice = np.concatenate([points, points * (1 + 1e-7)])
    risk = send(monitor, "t", twice, np.concatenate([labels, labels]))[-1]
    assert risk.queries == 20 and risk.distinct_queries == 10
