"""What a frontier trial is scored on, the Pareto front, and the rule that picks the default.

Pure functions over measured numbers: the search maximises the accuracy objective and minimises
the attack objective; the default preset is the most accurate trial the strongest attack fails on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The product's bar for "the strongest attack fails" on 32-px CIFAR (issue #10): the best
#: reconstruction's SSIM and the share of correct neighbour pairs must both stay at or below.
SSIM_LIMIT = 0.3
NEIGHBOUR_LIMIT = 0.10

ACCURACY_OBJECTIVE = "accuracy_objective"
ATTACK_OBJECTIVE = "attack_objective"
#: Tune metric names and their directions, in the order NSGA-II receives them.
OBJECTIVES = (ACCURACY_OBJECTIVE, ATTACK_OBJECTIVE)
MODES = ("max", "min")


def accuracy_objective(own_key_accuracy: float, fresh_key_accuracy: float) -> float:
    """The accuracy a tenant can count on: under its own key *and* under a key made after
    training (a new tenant, a rotated key), so the smaller of the two."""
    return min(own_key_accuracy, fresh_key_accuracy)


def attack_objective(attack_ssim: float, attack_neighbour: float) -> float:
    """The strongest attack's success relative to the bar: the larger of SSIM / 0.3 and
    neighbour accuracy / 0.10; at most 1 means the attack fails on both counts."""
    return max(attack_ssim / SSIM_LIMIT, attack_neighbour / NEIGHBOUR_LIMIT)


def attack_fails(attack_ssim: float, attack_neighbour: float) -> bool:
    return attack_ssim <= SSIM_LIMIT and attack_neighbour <= NEIGHBOUR_LIMIT


def dominates(first: Sequence[float], second: Sequence[float], maximize: Sequence[bool]) -> bool:
    """`first` is at least as good as `second` in every objective and better in one."""
    at_least = all(
        (a >= b) if up else (a <= b) for a, b, up in zip(first, second, maximize, strict=True)
    )
    better = any(
        (a > b) if up else (a < b) for a, b, up in zip(first, second, maximize, strict=True)
    )
    return at_least and better


def pareto_mask(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[bool]:
    """For every point, whether no other point dominates it (ties are all on the front)."""
    return [
        not any(dominates(other, point, maximize) for other in points if other is not point)
        for point in points
    ]


def objective_point(trial: Mapping[str, Any]) -> tuple[float, float]:
    """(accuracy objective, attack objective) of a measured trial record."""
    return (
        accuracy_objective(trial["own_key_accuracy"], trial["fresh_key_accuracy"]),
        attack_objective(trial["attack_ssim"], trial["attack_neighbour"]),
    )


def frontier_mask(trials: Sequence[Mapping[str, Any]]) -> list[bool]:
    """The Pareto front of measured trials: most accurate for how much the attack recovers."""
    return pareto_mask([objective_point(trial) for trial in trials], (True, False))


def choose_default(trials: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the most accurate trial (accuracy objective; ties: the weaker attack, then the
    earlier trial) whose strongest attack fails by the bar; None when no trial qualifies. A trial
    stopped before its epochs (ASHA, or a run stopped for time) is never the default: its
    accuracy is at another budget."""
    qualifying = [
        index
        for index, trial in enumerate(trials)
        if attack_fails(trial["attack_ssim"], trial["attack_neighbour"])
        and not trial.get("stopped_early", False)
    ]
    if not qualifying:
        return None
    return min(
        qualifying,
        key=lambda index: (
            -objective_point(trials[index])[0],
            objective_point(trials[index])[1],
            index,
        ),
    )
