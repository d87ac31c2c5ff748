"""Tests for the endpoint's side of result privacy: candidate sets in a keyed order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from patchveil.errors import PatchveilError
from patchveil.serve.result_privacy import candidate_sets, keyed_order, parse_result_key

KEY = bytes(range(32))
CLASSES = 10


def probabilities(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(CLASSES), count)


def test_each_set_holds_the_answer_and_the_next_most_probable_classes() -> None:
    probs = probabilities(200)
    labels = probs.argmax(axis=1)
    sets = candidate_sets(probs, labels, 3, KEY)
    assert sets.shape == (200, 3)
    top3 = np.sort(np.argsort(-probs, axis=1)[:, :3], axis=1)
    assert np.array_equal(np.sort(sets, axis=1), top3)
    assert all(len(set(row)) == 3 for row in sets.tolist())


def test_a_defended_answer_is_hidden_instead_of_the_top_one() -> None:
    probs = np.array([[0.7, 0.2, 0.05, 0.05]])
    sets = candidate_sets(probs, np.array([3]), 2)
    assert sets.tolist() == [[0, 3]]  # the answer 3, and the most probable other class


def test_an_empty_batch_gets_empty_sets() -> None:
    assert candidate_sets(np.empty((0, CLASSES)), np.empty(0, np.int64), 3, KEY).shape == (0, 3)


def test_without_a_key_the_set_is_in_ascending_order() -> None:
    probs = probabilities(50)
    sets = candidate_sets(probs, probs.argmax(axis=1), 4)
    assert np.array_equal(sets, np.sort(sets, axis=1))


def test_the_keyed_order_is_deterministic_and_uniform() -> None:
    assert np.array_equal(keyed_order(KEY, 5, 3), keyed_order(KEY, 5, 3))
    orders = Counter(tuple(keyed_order(KEY, index, 3)) for index in range(6000))
    assert len(orders) == 6  # every arrangement of 3
    assert all(800 < count < 1200 for count in orders.values()), orders
    assert sorted(keyed_order(KEY, 0, 10).tolist()) == list(range(10))
    other = bytes(range(1, 33))
    differ = sum(
        not np.array_equal(keyed_order(KEY, i, 5), keyed_order(other, i, 5)) for i in range(100)
    )
    assert differ > 90


def test_without_the_key_the_answer_position_is_chance() -> None:
    probs = probabilities(3000, seed=1)
    labels = probs.argmax(axis=1)
    sets = candidate_sets(probs, labels, 3, KEY)
    # An observer's best positional guess: no position holds the answer much above 1/3.
    for position in range(3):
        assert abs((sets[:, position] == labels).mean() - 1 / 3) < 0.04


def test_bad_requests_are_refused_without_echoing_the_key() -> None:
    probs = probabilities(4)
    with pytest.raises(PatchveilError, match="k must be"):
        candidate_sets(probs, probs.argmax(axis=1), 1, KEY)
    with pytest.raises(PatchveilError, match="k must be"):
        candidate_sets(probs, probs.argmax(axis=1), CLASSES + 1, KEY)
    with pytest.raises(PatchveilError):
        candidate_sets(probs, np.array([0, 1, 2, CLASSES]), 3, KEY)
    with pytest.raises(PatchveilError):
        candidate_sets(probs, probs.argmax(axis=1), 3, b"short")
    assert parse_result_key(KEY.hex()) == KEY
    for text in ("zz" * 32, KEY.hex()[:-2], KEY.hex() + "00"):
        with pytest.raises(PatchveilError) as caught:
            parse_result_key(text)
        assert text not in str(caught.value)
