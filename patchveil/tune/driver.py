"""The Tune driver: NSGA-II over accuracy and attack success, ASHA on accuracy, Train per trial.

`tune_frontier` runs the multi-objective search (`OptunaSearch` with Optuna's NSGA-II sampler,
define-by-run so that only valid configurations are drawn; `AsyncHyperBandScheduler` stops
trials whose accuracy lags, as ASHA needs one metric and the attack does not depend on training).
`run_configs` runs given configurations through the same trainable (the plain references).
Both return one `TrialRecord` per trial. Ray must be running (`ray.init(num_cpus=...)`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchveil.errors import PatchveilError
from patchveil.tune.objectives import ACCURACY_OBJECTIVE, MODES, OBJECTIVES
from patchveil.tune.space import SearchSpace, TrialConfig, suggest, trial_config_of
from patchveil.tune.trial import TrialExperiment, frontier_trial

ProgressCallback = Callable[[str], None]
#: CPUs a trial holds beside its Train workers when they run in their own actors.
COORDINATOR_CPUS = 0.1


@dataclass(frozen=True)
class TrialRecord:
    """What one finished (or stopped, or failed) trial measured at its last report."""

    config: TrialConfig
    metrics: dict[str, Any]
    epochs_trained: int
    error: str | None = None

    @property
    def stopped_early(self) -> bool:
        return self.error is None and self.epochs_trained < self.config.epochs


@dataclass(frozen=True)
class TuneSettings:
    """How trials run: resources, batch, attack size, seeds, where Ray keeps its files."""

    storage_path: str
    num_workers: int = 0
    cpus_per_trial: float = 2.0
    use_gpu: bool = False
    batch_size: int = 128
    attack_images: int = 24
    seed: int = 0
    max_concurrent_trials: int = 1
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.cpus_per_trial <= 0 or self.max_concurrent_trials < 1:
            raise PatchveilError(
                "num_workers must be ≥ 0, cpus_per_trial > 0 and max_concurrent_trials ≥ 1"
            )


def population_for(trials: int) -> int:
    """NSGA-II's generation size: small, so a short search reaches its second generation
    (Optuna's default is 50)."""
    return max(2, min(8, trials // 2))


def _trainable(experiment: TrialExperiment, settings: TuneSettings) -> Any:
    """The function trainable with its fixed arguments and explicit resources: in-process
    training gets the trial's CPUs; with Train workers the trial only coordinates."""
    from ray import tune

    cpus_per_worker = settings.cpus_per_trial
    trial_resources: dict[str, float] = {"CPU": settings.cpus_per_trial}
    if settings.num_workers > 0:
        cpus_per_worker = settings.cpus_per_trial / settings.num_workers
        # The trial only coordinates (and runs the attack); Ray refuses an empty request.
        trial_resources = {"CPU": COORDINATOR_CPUS}
    trainable = functools.partial(
        frontier_trial,
        num_workers=settings.num_workers,
        cpus_per_worker=cpus_per_worker,
        use_gpu=settings.use_gpu,
        batch_size=settings.batch_size,
        attack_images=settings.attack_images,
        seed=settings.seed,
        storage_path=str(Path(settings.storage_path).absolute() / "train"),
    )
    trainable.__name__ = "frontier_trial"  # type: ignore[attr-defined]
    with_data = tune.with_parameters(trainable, experiment=experiment)
    return tune.with_resources(with_data, trial_resources)


def _progress_callback(emit: ProgressCallback, total: int) -> Any:
    """A Tune callback that emits one line per epoch report and per finished trial (Ray is
    imported only when a search runs, hence the class inside)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = 0

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            config = trial_config_of(trial.config)
            attack = ""
            if "attack_ssim" in result:
                attack = (
                    f", attack SSIM {result['attack_ssim']:.2f}, neighbour "
                    f"{result['attack_neighbour']:.0%}"
                )
            emit(
                f"  {config.label} epoch {result.get('epoch', '?')}/{config.epochs}: own key "
                f"{result.get('own_key_accuracy', math.nan):.1%}, fresh key "
                f"{result.get('fresh_key_accuracy', math.nan):.1%}{attack}"
            )

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            emit(f"trial {self.done}/{total} done: {trial_config_of(trial.config).label}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            emit(f"trial {self.done}/{total} FAILED: {trial_config_of(trial.config).label}")

    return Progress()


def _records(result_grid: Any) -> list[TrialRecord]:
    records = []
    for result in result_grid:
        metrics = dict(result.metrics or {})
        config = trial_config_of(result.config)
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        epochs = int(metrics.get("epoch", 0))
        kept = {
            name: value
            for name, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        records.append(TrialRecord(config, kept, epochs, error))
    return records


def _run_config(settings: TuneSettings, name: str, callbacks: list[Any]) -> Any:
    from ray import tune

    return tune.RunConfig(
        name=name,
        storage_path=str(Path(settings.storage_path).absolute()),
        callbacks=callbacks,
        verbose=0,
    )


def tune_frontier(
    experiment: TrialExperiment,
    space: SearchSpace,
    settings: TuneSettings,
    *,
    trials: int,
    name: str = "frontier",
    population_size: int | None = None,
    progress: ProgressCallback | None = None,
    start_with: Sequence[Mapping[str, Any]] = (),
) -> list[TrialRecord]:
    """Search `trials` configurations of `space` for the accuracy/attack front; `start_with`
    (Optuna parameters, from `space.start_point`) are measured first, then NSGA-II breeds."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    if trials < 1:
        raise PatchveilError(f"trials must be at least 1, got {trials}")
    # NSGA-II breeds once a generation is measured: a small population lets a short search
    # reach its second generation (Optuna's default is 50).
    population = population_size or population_for(trials)
    searcher = OptunaSearch(
        space=functools.partial(suggest, space=space),
        metric=list(OBJECTIVES),
        mode=list(MODES),
        sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=settings.seed),
        points_to_evaluate=[dict(point) for point in start_with] or None,
    )
    scheduler = AsyncHyperBandScheduler(
        time_attr="training_iteration",
        metric=ACCURACY_OBJECTIVE,
        mode="max",
        max_t=space.max_epochs,
        grace_period=min(settings.grace_period, space.max_epochs),
        reduction_factor=settings.reduction_factor,
    )
    callbacks = [_progress_callback(progress, trials)] if progress else []
    tuner = tune.Tuner(
        _trainable(experiment, settings),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=settings.max_concurrent_trials,
            # One actor runs trial after trial: torch, the model code and the experiment's
            # data are loaded once, not once per trial.
            reuse_actors=True,
        ),
        run_config=_run_config(settings, name, callbacks),
    )
    return _records(tuner.fit())


def run_configs(
    experiment: TrialExperiment,
    configs: Sequence[TrialConfig],
    settings: TuneSettings,
    *,
    name: str = "frontier-references",
    progress: ProgressCallback | None = None,
) -> list[TrialRecord]:
    """Run given configurations through the same trainable, to the end (no search, no ASHA)."""
    from ray import tune

    if not configs:
        return []
    callbacks = [_progress_callback(progress, len(configs))] if progress else []
    tuner = tune.Tuner(
        _trainable(experiment, settings),
        param_space={"trial": tune.grid_search([config.to_json() for config in configs])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=settings.max_concurrent_trials, reuse_actors=True
        ),
        run_config=_run_config(settings, name, callbacks),
    )
    return _records(tuner.fit())
