"""The privacy frontier: the experimenter's trial data, the auditor's scores, the results files,
and a CPU smoke run of two tiny trials through Ray Tune (each a Ray Train run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.experiments.frontier import (
    FrontierData,
    FrontierExperiment,
    FrontierOptions,
    _plain_split,
    lever_pairs,
    presets_of,
    prior_results,
    publish,
    records_from_storage,
    run_frontier,
    search_of,
    trial_rows,
    tune_settings,
    without_repeats,
)
from patchveil.tenants.loaders import default_cifar_dir
from patchveil.tune.driver import TrialRecord
from patchveil.tune.space import TrialConfig

pytestmark = pytest.mark.skipif(default_cifar_dir() is None, reason="no CIFAR-10 data here")


def _config(group: str = "none", window: int = 2, **changes: Any) -> TrialConfig:
    variant = "window_position" if window else ("position_free" if group == "none" else "invariant")
    params: dict[str, Any] = {}
    if variant == "window_position":
        params = {
            "position_window": window,
            **({"invariance_group": group} if group != "none" else {}),
        }
    elif variant == "invariant":
        params = {"invariance_group": group}
    values: dict[str, Any] = {
        "block_size": 8,
        "window": window,
        "group": group,
        "variant": variant,
        "model_params": params,
        "depth": 2,
        "embed_dim": 64,
        "learning_rate": 1e-3,
        "block_cutmix": 0.0,
        "epochs": 1,
        "size": "test",
    }
    values.update(changes)
    return TrialConfig(**values)


@pytest.fixture(scope="module")
def experiment() -> FrontierExperiment:
    return FrontierExperiment(
        FrontierData(
            str(default_cifar_dir()), train_images=40, validation_images=12, gallery_images=30
        )
    )


def test_prepare_gives_each_tenant_its_key_and_a_fresh_key(experiment: FrontierExperiment) -> None:
    train, train_labels, validation, validation_labels = _plain_split(experiment.data)
    data = experiment.prepare(_config("rf", 0))
    assert data.train_images.shape == train.shape and data.train_images.dtype == np.uint8
    assert np.array_equal(data.train_labels, train_labels)
    assert np.array_equal(data.validation_labels, validation_labels)
    assert sorted(set(data.train_groups.tolist())) == [0, 1]
    for ciphertext, plain in (
        (data.train_images, train),
        (data.validation_images, validation),
        (data.fresh_images, validation),
    ):
        assert (ciphertext != plain).any(axis=(1, 2, 3)).all()
    assert not np.array_equal(data.fresh_images, data.validation_images)
    # A plain reference sees the images themselves.
    reference = experiment.prepare(_config().plain_reference())
    assert np.array_equal(reference.validation_images, validation)


def test_attack_scores_the_validation_ciphertexts(experiment: FrontierExperiment) -> None:
    """Block order inside 2×2 windows of 8-px blocks is solved; per-block rotation/flip of the
    whole image resists (the audit's findings, on a handful of images)."""
    solved = experiment.attack(
        _config("none", 2), experiment.prepare(_config("none", 2)).validation_images[:4]
    )
    assert solved["attack_ssim"] > 0.8 and solved["attack_neighbour"] > 0.8
    assert solved["linkage_rank1"] == 1.0
    config = _config("rf", 0, block_size=4)
    resisted = experiment.attack(config, experiment.prepare(config).validation_images[:2])
    assert resisted["attack_ssim"] < solved["attack_ssim"]
    assert set(resisted) >= {"attack_ssim", "attack_neighbour", "attack_direct", "linkage_rank1"}


def _record(config: TrialConfig, own: float, ssim: float, neighbour: float) -> TrialRecord:
    metrics = {
        "own_key_accuracy": own,
        "fresh_key_accuracy": own,
        "accuracy_objective": own,
        "attack_ssim": ssim,
        "attack_neighbour": neighbour,
        "attack_direct": neighbour,
        "linkage_rank1": 1.0,
        "attack_objective": max(ssim / 0.3, neighbour / 0.1),
    }
    return TrialRecord(config, metrics, config.epochs)


def test_rows_mark_the_front_and_name_the_presets() -> None:
    fast, private, dominated = _config("none", 2), _config("rf", 0), _config("np", 2)
    records = [
        _record(fast, 0.50, 0.9, 0.9),
        _record(private, 0.40, 0.15, 0.05),
        _record(dominated, 0.35, 0.5, 0.5),
        TrialRecord(_config("cs", 0), {}, 0, error="RuntimeError: boom"),
    ]
    reference = TrialRecord(fast.plain_reference(), {"own_key_accuracy": 0.55}, 1)
    rows = trial_rows(records, [reference])
    assert [row["pareto"] for row in rows] == [True, True, False]
    assert rows[0]["plain_accuracy"] == 0.55 and rows[1]["plain_accuracy"] == 0.55
    presets, default = presets_of(rows)
    assert [p["name"] for p in presets] == [
        "disposable-b8-w2-none-window_position",
        "disposable-b8-whole-rf-invariant",
    ]
    assert default == "disposable-b8-whole-rf-invariant"
    assert presets[1]["params"] == {"group": "rf", "window": 0} and presets[1]["default"]
    # A trial stopped early is listed but neither on the front nor a preset, however private.
    stopped = TrialRecord(_config("np", 0), _record(_config("np", 0), 0.2, 0.1, 0.01).metrics, 0)
    rows = trial_rows([*records, stopped], [reference])
    assert [row["pareto"] for row in rows] == [True, True, False, False]
    assert rows[-1]["stopped_early"] and len(presets_of(rows)[0]) == 2


def test_a_stopped_run_is_read_back_from_tune_storage(tmp_path: Path) -> None:
    """A long search stopped early still publishes what it measured: finished trials whole,
    the running one at its last reported epoch."""
    for index, (config, epochs) in enumerate([(_config("rf", 0), 1), (_config("rf", 2), 1)]):
        trial = tmp_path / f"trial_{index}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"trial": config.to_json()}))
        reports = [
            {"epoch": epoch, "own_key_accuracy": 0.3 + epoch / 100, "done": False}
            for epoch in range(1, epochs + 1)
        ]
        (trial / "result.json").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    (tmp_path / "tuner.pkl").write_bytes(b"")  # Tune's own files are skipped
    records = records_from_storage(tmp_path)
    assert [record.config.window for record in records] == [0, 2]
    assert records[0].metrics["own_key_accuracy"] == pytest.approx(0.31)
    assert "done" not in records[0].metrics and records[0].epochs_trained == 1


def test_a_published_run_is_merged_into_a_later_one(tmp_path: Path) -> None:
    """`--merge`: an earlier run's trials and plain references come back as records, so a later
    run shows them on its front (and needs no plain reference it already has); a file measured
    on other data is refused."""
    earlier, later = _config("rf", 0), _config("px", 0)
    reference = TrialRecord(earlier.plain_reference(), {"own_key_accuracy": 0.55}, 1)
    options = FrontierOptions(out=str(tmp_path), name="earlier", train_images=40)
    space, _ = search_of(options)
    folder = str(default_cifar_dir())
    settings = tune_settings(options, str(tmp_path))
    publish(options, folder, space, settings, [_record(earlier, 0.4, 0.2, 0.12)], [reference])
    data = json.loads((tmp_path / "earlier.json").read_text())["data"]
    prior = prior_results(tmp_path / "earlier.json", data)
    assert [r.config for r in prior.records] == [earlier]
    assert prior.records[0].metrics["attack_neighbour"] == 0.12
    assert prior.references[0].metrics == {"own_key_accuracy": 0.55}
    payload = publish(
        FrontierOptions(out=str(tmp_path), name="later", train_images=40),
        folder,
        space,
        settings,
        [_record(later, 0.35, 0.15, 0.08), *prior.records],
        list(prior.references),
        merged=[prior.about],
    )
    assert [row["label"] for row in payload["trials"]] == [later.label, earlier.label]
    assert payload["trials"][1]["plain_accuracy"] == 0.55
    assert payload["default_preset"] == f"disposable-{later.label}"
    assert payload["merged"][0]["file"] == "earlier.json"
    assert "Merged from `earlier.json`" in (tmp_path / "later.md").read_text()
    # The same file merged twice (or holding another's trials) shows each measurement once.
    assert without_repeats([*prior.records, *prior.records]) == list(prior.records)
    with pytest.raises(SystemExit, match="other data"):
        prior_results(tmp_path / "earlier.json", data.replace("40 training", "80 training"))


def test_lever_pairs_compare_trials_that_differ_in_one_setting() -> None:
    whole, windowed = _config("rf", 0), _config("rf", 2)
    other_group = _config("np", 0)
    rows = trial_rows(
        [
            _record(whole, 0.40, 0.20, 0.05),
            _record(windowed, 0.46, 0.25, 0.15),
            _record(other_group, 0.38, 0.30, 0.08),
        ],
        [],
    )
    pairs = lever_pairs(rows)
    assert [(p["lever"], p["from"], p["to"]) for p in pairs] == [
        ("layout", "whole image", "window 2, positions per window"),
        ("group", "rf", "np"),
    ]
    assert pairs[0]["accuracy_delta"] == pytest.approx(0.06)
    assert pairs[0]["neighbour_delta"] == pytest.approx(0.10)


def test_two_tiny_trials_through_tune(ray_session: Any, tmp_path: Path) -> None:
    """The whole frontier on a few hundred images: two NSGA-II trials under ASHA and their plain
    reference(s), each a Ray Train run (in-process workers), results with provenance."""
    options = FrontierOptions(
        trials=2,
        train_images=256,
        validation_images=64,
        epochs=(1,),
        block_sizes=(8,),
        groups=("none", "rf"),
        depths=(2,),
        widths=(64,),
        size="test",
        orbit_pools=("mean", "max"),
        start_with=("block=8,window=0,group=rf,model=invariant,pool=max",),
        attack_images=6,
        gallery_images=128,
        cpus=1,
        out=str(tmp_path),
        storage=str(tmp_path / "ray"),
    )
    start = time.perf_counter()
    payload = run_frontier(options, progress=lambda line: None, command=["pytest"])
    assert time.perf_counter() - start < 90
    saved = json.loads((tmp_path / "frontier.json").read_text())
    for field in ("commit", "command", "machine", "date", "default_preset", "trials", "presets"):
        assert field in saved
    assert len(saved["trials"]) == 2 and not saved["failed"]
    # The start point is measured (first), then the search draws.
    assert "b8-whole-rf-invariant-max" in [row["label"] for row in saved["trials"]]
    for row in saved["trials"]:
        for metric in ("own_key_accuracy", "fresh_key_accuracy", "plain_accuracy"):
            assert 0.0 <= row[metric] <= 1.0
        # Exactly key-free: a key made after training gives the same accuracy.
        assert row["fresh_key_accuracy"] == pytest.approx(row["own_key_accuracy"], abs=0.02)
        assert 0.0 <= row["attack_neighbour"] <= 1.0 and row["linkage_rank1"] == 1.0
        assert isinstance(row["pareto"], bool)
    assert any(row["pareto"] for row in saved["trials"])
    assert payload["default_preset"] == saved["default_preset"]
    assert "| trial | block |" in (tmp_path / "frontier.md").read_text()
    assert (tmp_path / "frontier.png").stat().st_size > 1000
