"""`patchveil federated leakage` end to end on one tiny image; bad arguments are one-line errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from patchveil.cli_federated import _pairs, add_federated_commands
from patchveil.errors import PatchveilError
from tests.federated.helpers import write_tenant_source


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchveil")
    add_federated_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_leakage_scores_every_attack_with_and_without_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_tenant_source(tmp_path / "images.npz", seed=0, count=4)
    args = _parser().parse_args(
        [
            "federated", "leakage", "--source", source, "--image-size", "16", "--width", "4",
            "--attack", "idlg", "--attack", "adaptive_optimise",
            "--lbfgs-steps", "1", "--adam-steps", "2", "--json",
        ]
    )  # fmt: skip
    assert args.handler(args) == 0
    rows = json.loads(capsys.readouterr().out)["attacks"]
    assert [(r["attack"], r["lock"]) for r in rows] == [
        ("idlg", False),
        ("idlg", True),
        ("adaptive_optimise", True),
    ]


def test_tenant_pairs_are_checked() -> None:
    assert _pairs(["a=x", "b=y=z"], "--tenant") == {"a": "x", "b": "y=z"}
    with pytest.raises(PatchveilError, match="TENANT=VALUE"):
        _pairs(["a"], "--tenant")
    with pytest.raises(PatchveilError, match="twice"):
        _pairs(["a=x", "a=y"], "--tenant")
