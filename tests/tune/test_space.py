"""The search space draws only valid configurations, and the validity check names what is wrong."""

from __future__ import annotations

import pytest

from patchveil.errors import PatchveilError
from patchveil.groups import GROUP_NAMES
from patchveil.tune.space import (
    SearchSpace,
    TrialConfig,
    block_sizes_for,
    check_config,
    compatible_variants,
    start_point,
    suggest,
    trial_config_of,
    variant_params,
    windows_for,
)

optuna = pytest.importorskip("optuna")


def _config(**changes: object) -> TrialConfig:
    values: dict[str, object] = {
        "block_size": 4,
        "window": 4,
        "group": "rf",
        "variant": "window_position",
        "model_params": {"position_window": 4, "invariance_group": "rf"},
        "depth": 2,
        "embed_dim": 64,
        "learning_rate": 1e-3,
        "block_cutmix": 0.5,
        "epochs": 1,
        "size": "test",
    }
    values.update(changes)
    return TrialConfig(**values)  # type: ignore[arg-type]


def test_geometry_helpers() -> None:
    assert block_sizes_for(32) == [2, 4, 8, 16]
    assert windows_for(8) == [0, 2, 4]
    assert windows_for(4) == [0, 2]
    assert windows_for(2) == [0]
    assert compatible_variants(0, "none") == ["position_free"]
    assert compatible_variants(0, "rf") == ["invariant"]
    assert compatible_variants(4, "none") == ["window_position", "position_free"]
    assert variant_params("window_position", 2, "np") == {
        "position_window": 2,
        "invariance_group": "np",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"block_size": 5},  # does not divide 32
        {
            "block_size": 32,
            "window": 0,
            "variant": "invariant",
            "model_params": {"invariance_group": "rf"},
        },
        {"window": 3},  # does not divide the 8-block grid
        {"window": 8},  # the whole grid: the same as window 0, drawn twice otherwise
        {"variant": "standard", "model_params": {}},  # not invariant to a fresh key
        {"variant": "position_free", "model_params": {}},  # ignores the per-block group
        {"model_params": {"position_window": 2, "invariance_group": "rf"}},  # wrong window
        {"group": "xy"},
        {"embed_dim": 100},
        {"learning_rate": 0.0},
        {"block_cutmix": 1.5},
        {"epochs": 0},
        {"cipher": "conventional"},
    ],
)
def test_invalid_configurations_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(PatchveilError):
        _config(**changes)


def test_a_valid_configuration_round_trips_and_builds_its_model() -> None:
    config = _config()
    assert TrialConfig.from_json(config.to_json()) == config
    spec = config.model_spec()
    assert spec.param("position_window") == 4 and spec.param("invariance_group") == "rf"
    assert config.cipher_params == {"group": "rf", "window": 4}
    reference = config.plain_reference()
    assert reference.cipher == "plain" and reference.variant == "standard"
    assert (reference.block_size, reference.epochs, reference.learning_rate) == (4, 1, 1e-3)
    assert _config(learning_rate=3e-3, block_cutmix=0.0).plain_reference() == reference.__class__(
        **{**reference.to_json(), "block_cutmix": 0.0}
    )
    check_config(reference)


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_every_sampled_configuration_is_valid(sampler: str) -> None:
    """400 draws over every block size, window, group and model of a 32-px image: each one
    builds (TrialConfig checks it on construction, and again here) and the draws cover the
    conditional choices."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace(
        block_sizes=(2, 4, 8, 16), groups=GROUP_NAMES, epochs=(1, 2), orbit_pools=("mean", "max")
    )
    chosen = (
        optuna.samplers.RandomSampler(seed=0)
        if sampler == "random"
        else optuna.samplers.NSGAIISampler(population_size=6, seed=0)
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=chosen)
    seen, pools = set(), set()
    for index in range(400):
        trial = study.ask()
        config = trial_config_of(suggest(trial, space))
        check_config(config)
        assert config.variant in compatible_variants(config.window, config.group)
        seen.add((config.block_size, config.window, config.variant))
        pools.add(config.orbit_pool)
        assert config.group != "none" or "orbit_pool" not in config.model_params
        study.tell(trial, [index % 7 / 7, (index * 3) % 5 / 5])
    assert {block for block, _, _ in seen} == {2, 4, 8, 16}
    assert {variant for _, _, variant in seen} == {"window_position", "position_free", "invariant"}
    assert any(window == 0 for _, window, _ in seen) and any(window for _, window, _ in seen)
    assert pools == {"mean", "max"}


def test_orbit_pool_is_part_of_the_model_and_its_label() -> None:
    pooled = _config(
        model_params={"position_window": 4, "invariance_group": "rf", "orbit_pool": "max"}
    )
    assert pooled.orbit_pool == "max" and pooled.label == "b4-w4-rf-window_position-max"
    assert _config().label == "b4-w4-rf-window_position"  # the mean is the default, unnamed
    assert TrialConfig.from_json(pooled.to_json()) == pooled
    with pytest.raises(PatchveilError, match="orbit pool"):
        _config(model_params={"position_window": 4, "invariance_group": "rf", "orbit_pool": "x"})
    with pytest.raises(PatchveilError, match="unknown orbit pools"):
        SearchSpace(orbit_pools=("mean", "median"))


def test_start_points_become_the_parameters_suggest_draws() -> None:
    """A start point names a configuration in the CLI's words; Optuna enqueues the parameters
    `suggest` reads, and drawing with them gives exactly that configuration."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace(block_sizes=(4, 8), groups=("none", "rf"), orbit_pools=("mean", "max"))
    point = start_point(
        "block=4, window=4, group=rf, model=window_position, pool=max, lr=1e-3", space
    )
    assert point == {
        "block_size": 4,
        "window_b4": 4,
        "group": "rf",
        "position_w4": "per_window",
        "orbit_pool": "max",
        "learning_rate": 1e-3,
    }
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(point)
    config = trial_config_of(suggest(study.ask(), space))
    assert config.label == "b4-w4-rf-window_position-max" and config.learning_rate == 1e-3
    whole = start_point("block=8,window=0,group=rf,model=invariant", space)
    assert whole == {"block_size": 8, "window_b8": 0, "group": "rf"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("block=5", "not in the search space"),
        ("block=4,window=3", "not in the search space"),
        ("window=4", "needs its block"),
        ("block=4,model=invariant", "a model its window"),
        ("lr=abc", "not a number"),
        ("block=4,window=0,group=rf,model=window_position", "not in the search space"),
        ("colour=red", "KEY=VALUE"),
        ("block", "KEY=VALUE"),
        ("block=four", "not an integer"),
        ("lr=0.9", "outside"),
        ("group=np_cs_rf", "not in the search space"),
    ],
)
def test_a_bad_start_point_is_named(text: str, message: str) -> None:
    space = SearchSpace(block_sizes=(4, 8), groups=("none", "rf"))
    with pytest.raises(PatchveilError, match=message):
        start_point(text, space)


def test_a_search_space_refuses_impossible_choices() -> None:
    with pytest.raises(PatchveilError, match="block size 5"):
        SearchSpace(block_sizes=(5,))
    with pytest.raises(PatchveilError, match="unknown groups"):
        SearchSpace(groups=("none", "zz"))
    with pytest.raises(PatchveilError, match="learning-rate"):
        SearchSpace(learning_rate=(0.0, 1e-3))
