"""Objective composition, the Pareto front and the default-preset rule (pure functions)."""

from __future__ import annotations

from patchveil.tune.objectives import (
    accuracy_objective,
    attack_fails,
    attack_objective,
    choose_default,
    dominates,
    frontier_mask,
    pareto_mask,
)


def _trial(own: float, fresh: float, ssim: float, neighbour: float) -> dict[str, float]:
    return {
        "own_key_accuracy": own,
        "fresh_key_accuracy": fresh,
        "attack_ssim": ssim,
        "attack_neighbour": neighbour,
    }


def test_objectives_compose_the_measures() -> None:
    assert accuracy_objective(0.5, 0.2) == 0.2  # a key made after training must work too
    assert attack_objective(0.15, 0.05) == 0.5
    assert attack_objective(0.15, 0.2) == 2.0
    assert attack_fails(0.3, 0.1) and not attack_fails(0.31, 0.0) and not attack_fails(0.0, 0.11)


def test_pareto_front_of_two_objectives() -> None:
    points = [(0.5, 3.0), (0.4, 1.0), (0.45, 2.0), (0.3, 1.5), (0.5, 3.0), (0.2, 0.5)]
    # (0.3, 1.5) is dominated by (0.4, 1.0); the duplicate best-accuracy points both stay.
    assert pareto_mask(points, (True, False)) == [True, True, True, False, True, True]
    assert dominates((1, 0), (0, 0), (True, False))
    assert not dominates((1, 1), (0, 0), (True, False))
    assert pareto_mask([], (True, False)) == []


def test_frontier_mask_uses_fresh_key_accuracy_and_the_attack_bar() -> None:
    trials = [
        _trial(0.50, 0.50, 0.80, 0.80),  # accurate, attacked
        _trial(0.60, 0.10, 0.15, 0.01),  # own key only: its fresh key fails
        _trial(0.45, 0.45, 0.15, 0.05),  # key-free and private
        _trial(0.40, 0.40, 0.20, 0.06),  # dominated by the one above
    ]
    assert frontier_mask(trials) == [True, False, True, False]


def test_default_is_the_most_accurate_trial_the_attack_fails_on() -> None:
    trials = [
        _trial(0.52, 0.52, 0.79, 0.82),  # most accurate, but reassembled
        _trial(0.47, 0.47, 0.17, 0.09),
        _trial(0.49, 0.49, 0.25, 0.12),  # neighbour above 10%
        _trial(0.47, 0.47, 0.12, 0.05),  # ties on accuracy, weaker attack: chosen
        _trial(0.60, 0.05, 0.10, 0.02),  # not key-free
    ]
    assert choose_default(trials) == 3
    # A trial stopped before its epochs is never the default, however it scored.
    stopped = {**_trial(0.55, 0.55, 0.10, 0.05), "stopped_early": True}
    assert choose_default([*trials, stopped]) == 3


def test_no_default_when_no_trial_qualifies() -> None:
    assert choose_default([_trial(0.5, 0.5, 0.8, 0.8), _trial(0.4, 0.4, 0.31, 0.05)]) is None
    assert choose_default([]) is None
