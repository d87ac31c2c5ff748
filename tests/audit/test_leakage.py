"""MI estimators: calibrated on Gaussians of known MI, ≈ 0 on shuffled pairs, InfoNCE capped."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from patchveil.audit.leakage import (
    ESTIMATORS,
    MIEstimate,
    calibrate,
    confidence_interval,
    correlated_gaussians,
    dv_bound,
    estimate_mi,
    gaussian_mi,
    infonce_bound,
    measure_leakage,
    rho_for_mi,
    shuffled_null,
    smile_bound,
)
from patchveil.errors import PatchveilError


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_gaussian_mi_closed_form() -> None:
    assert gaussian_mi(1, 0.0) == 0.0
    assert gaussian_mi(3, 0.5) == pytest.approx(-1.5 * math.log(0.75))
    assert gaussian_mi(4, rho_for_mi(4, 1.7)) == pytest.approx(1.7)
    with pytest.raises(PatchveilError):
        gaussian_mi(2, 1.0)


def test_bounds_on_fixed_scores() -> None:
    flat = torch.zeros(8, 8)
    for bound in (dv_bound, infonce_bound, smile_bound):
        assert float(bound(flat)) == pytest.approx(0.0, abs=1e-6)
    # A critic that singles out every true pair: InfoNCE reaches but never passes log B,
    # DV grows without limit, SMILE's clipped partition keeps it finite.
    sharp = torch.full((8, 8), -50.0).fill_diagonal_(50.0)
    assert float(infonce_bound(sharp)) == pytest.approx(math.log(8), abs=1e-6)
    assert float(dv_bound(sharp)) == pytest.approx(100.0, abs=1e-4)
    assert float(smile_bound(sharp)) == pytest.approx(55.0, abs=1e-4)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(("dim", "mi"), [(2, 1.0), (5, 2.0)])
def test_calibration_on_gaussians(estimator: str, dim: int, mi: float) -> None:
    result = calibrate(estimator, dim, rho_for_mi(dim, mi), count=2400, steps=200)  # type: ignore[arg-type]
    assert result.true_mi == pytest.approx(mi)
    assert result.passed, result.to_json()
    json.dumps(result.to_json())


def test_infonce_is_capped_at_log_batch() -> None:
    x, y = correlated_gaussians(1200, 5, 0.999)  # about 15.5 nats
    estimate = estimate_mi(x, y, "infonce", seeds=(0,), steps=150, batch_size=16)
    assert estimate.mean <= math.log(16) + 1e-6
    assert estimate.mean > 0.7 * math.log(16)


def test_shuffled_null_is_near_zero() -> None:
    x, y = correlated_gaussians(1800, 5, rho_for_mi(5, 2.0), seed=3)
    result = measure_leakage(x, y, label="gaussians", seeds=(0,), steps=120)
    for name in ESTIMATORS:
        assert result.estimates[name].mean > 1.0
        assert abs(result.null[name].mean) < 0.1, result.null[name]
    payload = json.loads(json.dumps(result.to_json()))
    assert set(payload) >= {"label", "mine", "infonce", "smile", "null"}


def test_shuffled_null_keeps_the_samples() -> None:
    x, y = correlated_gaussians(50, 2, 0.9)
    same_x, shuffled_y = shuffled_null(x, y)
    assert same_x is x
    assert np.allclose(np.sort(shuffled_y, axis=0), np.sort(y, axis=0))
    assert not np.allclose(shuffled_y, y)


def test_confidence_interval() -> None:
    mean, low, high = confidence_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)  # t(0.975, 2)
    assert mean - low == pytest.approx(high - mean)
    assert confidence_interval([0.5]) == (0.5, 0.5, 0.5)


def test_estimate_is_frozen_and_serialisable() -> None:
    estimate = MIEstimate("mine", 1.0, 0.8, 1.2, (0.9, 1.1), "separable", 10, 8, 100, 50)
    with pytest.raises(AttributeError):
        estimate.mean = 2.0  # type: ignore[misc]
    assert json.loads(json.dumps(estimate.to_json()))["per_seed"] == [0.9, 1.1]


def test_unpaired_or_too_few_samples_refused() -> None:
    x, y = correlated_gaussians(100, 2, 0.5)
    with pytest.raises(PatchveilError, match="paired"):
        estimate_mi(x, y[:50], "mine")
    with pytest.raises(PatchveilError, match="batch_size"):
        estimate_mi(x, y, "mine", batch_size=128)
    with pytest.raises(PatchveilError, match="estimator"):
        estimate_mi(x, y, "kde", batch_size=8)  # type: ignore[arg-type]
