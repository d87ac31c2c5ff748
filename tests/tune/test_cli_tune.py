"""`patchveil tune` parses bounded options; `--preset` and `patchveil ciphers` read the presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.cli import build_parser, main
from patchveil.experiments.frontier import options_of
from tests.tune.test_presets import _preset, _write


def test_tune_options_are_bounded_and_reach_the_experiment() -> None:
    args = build_parser().parse_args(
        ["tune", "--trials", "3", "--epochs", "2", "3", "--block-sizes", "4", "8", "--groups", "rf"]
    )
    options = options_of(args)
    assert (options.trials, options.epochs, options.block_sizes, options.groups) == (
        3,
        (2, 3),
        (4, 8),
        ("rf",),
    )
    for bad in (["--trials", "0"], ["--cpus", "-1"], ["--block-cutmix", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["tune", *bad])
        assert exit_info.value.code == 2


def test_a_bad_start_point_fails_in_one_line_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tune", "--block-sizes", "4", "--start-with", "block=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "block=8 is not in the search space" in err
    assert main(["tune", "--orbit-pools", "median"]) == 2
    assert "unknown orbit pools" in capsys.readouterr().err


def test_onboard_refuses_a_preset_it_contradicts_or_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frontier = _write(tmp_path / "frontier.json", "p", _preset("p", "rf", default=True))
    monkeypatch.setenv("PATCHVEIL_FRONTIER", str(frontier))
    base = ["tenant", "onboard", "--home", str(tmp_path / "home"), "--tenant", "acme"]
    assert main([*base, "--source", "x", "--preset", "p", "--block-size", "8"]) == 2
    assert "contradicts preset p" in capsys.readouterr().err
    assert main([*base, "--source", "x", "--preset", "nope"]) == 2
    assert "no preset 'nope'" in capsys.readouterr().err


def test_train_refuses_a_preset_it_contradicts_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frontier = _write(tmp_path / "frontier.json", "p", _preset("p", "rf", default=True))
    monkeypatch.setenv("PATCHVEIL_FRONTIER", str(frontier))
    base = ["train", "--home", str(tmp_path / "home"), "--dataset", "d", "--preset", "p"]
    assert main([*base, "--variant", "position_free"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--variant position_free contradicts preset p (invariant)")
    assert len(err.splitlines()) == 1


def test_ciphers_lists_presets_with_their_measured_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frontier = _write(tmp_path / "frontier.json", None, _preset("fast", "none"))
    monkeypatch.setenv("PATCHVEIL_FRONTIER", str(frontier))
    assert main(["ciphers", "--block-size", "4", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "fast: disposable block 4 group=none window=0: own key 41.0%" in out
    assert "attack SSIM 0.14" in out and "no default" in out
    json.loads(frontier.read_text())  # the file itself is left as it was
