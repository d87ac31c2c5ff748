"""A smoke run of the paper table: tiny data, tiny model, one epoch, every output written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.experiments.paper_table import main
from patchveil.tenants.loaders import default_cifar_dir

pytestmark = pytest.mark.skipif(default_cifar_dir() is None, reason="no CIFAR-10 data here")


def test_paper_table_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    rows = ["plain", "conventional_independent_keys", "disposable_keys_block_order"]
    argv = ["--size", "test", "--epochs", "1", "--limit", "240", "--out", str(tmp_path)]
    payload = main([*argv, "--rows", *rows])
    assert [row["name"] for row in payload["rows"]] == rows
    saved = json.loads((tmp_path / "paper_table.json").read_text())
    for field in ("commit", "command", "machine", "date"):
        assert saved[field]
    for row in saved["rows"]:
        for metric in ("own_key_accuracy", "fresh_key_accuracy", "plain_accuracy"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["key_space_bits"] >= 0 and row["train_seconds"] > 0
    # Exact key independence: a key made after training changes nothing (own-key accuracy is a
    # mean over the tenants' test splits, so it matches the pooled figure only closely).
    free = saved["rows"][2]
    assert free["fresh_key_accuracy"] == free["plain_accuracy"]
    assert free["own_key_accuracy"] == pytest.approx(free["plain_accuracy"], abs=0.02)
    assert "| disposable_keys_block_order |" in (tmp_path / "paper_table.md").read_text()
    assert (tmp_path / "paper_table.png").stat().st_size > 1000


def test_a_stopped_table_resumes_with_the_rows_it_finished(tmp_path: Path) -> None:
    argv = ["--size", "test", "--epochs", "1", "--limit", "160", "--out", str(tmp_path)]
    first = main([*argv, "--rows", "plain"])
    assert first["pending"] == []
    kept = first["rows"][0]
    second = main([*argv, "--resume", "--rows", "plain", "disposable_keys_block_order"])
    assert second["rows"][0] == kept  # not trained again
    assert [row["name"] for row in second["rows"]] == ["plain", "disposable_keys_block_order"]
    goal = second["goal"]
    assert [(check["row"], check["reference"]) for check in goal] == [
        ("disposable_keys_block_order", "plain")
    ]
    assert "Goal check" in (tmp_path / "paper_table.md").read_text()
    (tmp_path / "paper_table.md").unlink()
    rendered = main([*argv, "--render"])
    assert rendered["rows"] == second["rows"]
    assert "| disposable_keys_block_order |" in (tmp_path / "paper_table.md").read_text()
    with pytest.raises(SystemExit, match="other settings"):
        main([*argv[:3], "2", *argv[4:], "--resume", "--rows", "plain"])
    with pytest.raises(SystemExit, match="unknown rows"):
        main([*argv, "--rows", "no_such_row"])
