"""Tests for the tenant's side of result privacy: resolving the endpoint's candidate sets."""

from __future__ import annotations

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.result_privacy import candidate_sets, parse_result_key
from patchveil.tenants.result_privacy import ResultKey, resolve, resolve_with_prior

CLASSES = 10


def probabilities(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(CLASSES), count)


def test_the_key_holder_recovers_every_answer() -> None:
    key = ResultKey()
    probs = probabilities(500)
    labels = probs.argmax(axis=1)
    # The request carries the key as hex; the endpoint parses it and answers sets.
    sets = candidate_sets(probs, labels, 4, parse_result_key(key.request_value()))
    assert np.array_equal(resolve(sets, key), labels)
    # Anyone else (another key) is right about 1 time in 4.
    assert (resolve(sets, ResultKey()) == labels).mean() < 0.4


def test_a_private_prior_resolves_sets_without_a_key() -> None:
    rng = np.random.default_rng(1)
    probs = probabilities(400, seed=2)
    # This tenant only has classes 0 and 7, which the platform does not know.
    mine = np.array([0, 7])
    labels = rng.choice(mine, 400)
    probs[np.arange(400), labels] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    sets = candidate_sets(probs, labels, 3)
    prior = np.zeros(CLASSES)
    prior[mine] = 1.0
    tenant_accuracy = (resolve_with_prior(sets, prior) == labels).mean()
    # The platform's best guess from the set alone: one fixed position.
    platform_guess = max((sets[:, position] == labels).mean() for position in range(3))
    assert tenant_accuracy > 0.8 and platform_guess < 0.6


def test_the_key_never_prints() -> None:
    secret = bytes(range(32))
    key = ResultKey(secret)
    assert secret.hex() not in repr(key) and secret.hex() not in str(key)
    assert key.request_value() == secret.hex()
    with pytest.raises(PatchveilError):
        ResultKey(b"short")
    with pytest.raises(PatchveilError):
        resolve(np.zeros(3, np.int64), key)
    with pytest.raises(PatchveilError):
        resolve_with_prior(np.array([[0, 11]]), np.ones(CLASSES))
