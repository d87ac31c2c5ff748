"""The frontier flow: Ray Tune maps accuracy against attack success and publishes the presets.

`tune_privacy_frontier` reads like the runbook: search the configurations (each trial a Ray Train
run on its ciphertext, attacked once on its validation ciphertext), run the plain references at
the same budget, write bench/results/frontier.{md,json,png} with the default preset. Playing the
tenants and the auditor is the experimenter's part (`patchveil.experiments.frontier`); the
search itself (`patchveil.tune`) sees ciphertext and numbers only.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from patchveil.experiments.frontier import FrontierOptions, run_frontier


def _console(line: str) -> None:
    # Straight to the terminal: the CLI may route Prefect's own log records to a file.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@task(name="search-frontier", persist_result=False, cache_policy=NO_CACHE)
def search_frontier(options: FrontierOptions, command: list[str] | None) -> dict[str, Any]:
    return run_frontier(options, progress=_console, command=command)


@flow(name="tune-privacy-frontier", persist_result=False)
def tune_privacy_frontier(
    options: FrontierOptions | None = None, command: list[str] | None = None
) -> dict[str, Any]:
    """Search, measure, publish; returns the default preset and the front in brief."""
    options = options or FrontierOptions()
    payload = search_frontier(options, command)
    front = [row for row in payload["trials"] if row["pareto"]]
    get_run_logger().info(
        "frontier: %d trials, %d on the front, default preset %s",
        len(payload["trials"]),
        len(front),
        payload["default_preset"] or "none (no trial kept the attack below the bar)",
    )
    return {
        "default_preset": payload["default_preset"],
        "trials": len(payload["trials"]),
        "pareto": [row["label"] for row in front],
        "failed": len(payload["failed"]),
        "options": asdict(options),
        "out": f"{options.out}/{options.name}.json",
    }
