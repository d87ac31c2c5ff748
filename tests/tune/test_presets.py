"""Presets come from a frontier file: loaded as measured, the default as the file names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.errors import PatchveilError
from patchveil.presets import apply_preset, load_presets, preset_training


def _preset(name: str, group: str, default: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "cipher": "disposable",
        "block_size": 4,
        "image_size": 32,
        "params": {"group": group, "window": 0},
        "model": {"variant": "invariant", "params": {"invariance_group": group}},
        "training": {"learning_rate": 1e-3, "block_cutmix": 0.5, "epochs": 4},
        "measured": {
            "own_key_accuracy": 0.41,
            "fresh_key_accuracy": 0.41,
            "plain_accuracy": 0.45,
            "attack_ssim": 0.14,
            "attack_neighbour": 0.07,
            "linkage_rank1": 1.0,
        },
        "default": default,
    }


def _write(path: Path, default: str | None, *presets: dict[str, object]) -> Path:
    path.write_text(
        json.dumps({"commit": "abc", "default_preset": default, "presets": list(presets)})
    )
    return path


def test_presets_and_default_are_read_from_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "frontier.json",
        "private",
        _preset("fast", "none"),
        _preset("private", "np_rf", default=True),
    )
    table = load_presets(path)
    assert [p.name for p in table.presets] == ["fast", "private"]
    assert table.default is not None and table.default.name == "private"
    assert table.get("private").params == {"group": "np_rf", "window": 0}
    assert "own key 41.0%" in table.get("fast").summary()
    with pytest.raises(PatchveilError, match=r"no preset 'nope'.*fast, private"):
        table.get("nope")


def test_no_default_when_the_file_has_none(tmp_path: Path) -> None:
    table = load_presets(_write(tmp_path / "f.json", None, _preset("fast", "none")))
    assert table.default is None
    assert load_presets(tmp_path / "missing.json").presets == ()


def test_a_default_that_is_not_a_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchveilError, match="not among its presets"):
        load_presets(_write(tmp_path / "f.json", "ghost", _preset("fast", "none")))


def test_apply_preset_fills_what_is_missing_and_refuses_contradictions(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.json", "p", _preset("p", "rf", default=True))
    assert apply_preset("p", None, None, {}, path) == (
        "disposable",
        4,
        {"group": "rf", "window": "0"},
    )
    assert apply_preset("p", "disposable", 4, {"window": "0"}, path)[0] == "disposable"
    with pytest.raises(PatchveilError, match="--cipher conventional contradicts"):
        apply_preset("p", "conventional", None, {}, path)
    with pytest.raises(PatchveilError, match="--block-size 8 contradicts"):
        apply_preset("p", None, 8, {}, path)
    with pytest.raises(PatchveilError, match="group=np contradicts"):
        apply_preset("p", None, None, {"group": "np"}, path)


def test_a_preset_trains_as_it_was_measured(tmp_path: Path) -> None:
    """`patchveil train --preset`: the preset's variant, parameters, learning rate and cutmix
    fill what the command line leaves unset; a contradiction names both values."""
    preset = _preset("p", "rf", default=True)
    preset["model"] = {
        "variant": "window_position",
        "params": {"position_window": 4, "invariance_group": "rf", "orbit_pool": "sorted"},
    }
    path = _write(tmp_path / "f.json", "p", preset)
    unset = dict.fromkeys(
        (
            "variant",
            "invariance_group",
            "position_window",
            "orbit_pool",
            "learning_rate",
            "block_cutmix",
        )
    )
    assert preset_training("p", unset, path) == {
        "variant": "window_position",
        "invariance_group": "rf",
        "position_window": 4,
        "orbit_pool": "sorted",
        "learning_rate": 1e-3,
        "block_cutmix": 0.5,
    }
    agreeing = {**unset, "variant": "window_position", "block_cutmix": 0.5}
    assert preset_training("p", agreeing, path)["orbit_pool"] == "sorted"
    with pytest.raises(PatchveilError, match="--orbit-pool mean contradicts preset p"):
        preset_training("p", {**unset, "orbit_pool": "mean"}, path)
    with pytest.raises(PatchveilError, match="no preset 'q'"):
        preset_training("q", unset, path)


def test_the_committed_frontier_loads_if_present() -> None:
    """Whatever bench/results/frontier.json holds must load (presets are read, never typed)."""
    table = load_presets()
    if table.default is not None:
        assert table.default.measured["attack_ssim"] <= 0.3
        assert table.default.measured["attack_neighbour"] <= 0.10
