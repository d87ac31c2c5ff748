"""A smoke run of the jigsaw audit: a few images, every output written with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.experiments.jigsaw_audit import main
from patchveil.tenants.loaders import default_cifar_dir

pytestmark = pytest.mark.skipif(default_cifar_dir() is None, reason="no CIFAR-10 data here")


def test_jigsaw_audit_writes_json_markdown_and_picture(tmp_path: Path) -> None:
    payload = main(
        [
            "--images",
            "6",
            "--show",
            "3",
            "--windows",
            "0",
            "2",
            "--groups",
            "rf",
            "--out",
            str(tmp_path),
        ]
    )
    assert [(row["window"], row["group"]) for row in payload["rows"]] == [
        (0, "none"),
        (2, "none"),
        (0, "rf"),
    ]
    saved = json.loads((tmp_path / "jigsaw_attack.json").read_text())
    for field in ("commit", "command", "machine", "date"):
        assert saved[field]
    for row in saved["rows"]:
        assert 0.0 <= row["attack_direct_accuracy"] <= 1.0
    assert "| whole image | none | 64 |" in (tmp_path / "jigsaw_attack.md").read_text()
    assert (tmp_path / "jigsaw_attack.png").stat().st_size > 1000


def test_the_cli_runs_the_same_audit(tmp_path: Path) -> None:
    from patchveil.cli import main as cli

    argv = ["experiment", "jigsaw-audit", "--images", "4", "--show", "2", "--windows", "2"]
    assert cli([*argv, "--groups", "--out", str(tmp_path), "--name", "audit"]) == 0
    rows = json.loads((tmp_path / "audit.json").read_text())["rows"]
    assert [(row["window"], row["group"]) for row in rows] == [(2, "none")]
