"""The platform commands' contract without a cluster: empty listings, refusals with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [["tenant", "list"], ["dataset", "list"], ["model", "list"]])
def test_listings_of_an_empty_home_are_empty_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, out, _ = run(capsys, *command, "--home", tmp_path / "home", "--json")
    assert code == 0 and json.loads(out) == []


def test_onboard_without_its_arguments_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "tenant", "onboard", "--home", tmp_path, "--tenant", "acme")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--source, --cipher, --block-size" in err


def test_help_lists_the_platform_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("tenant", "dataset", "model", "onboarding", "train", "experiment"):
        assert command in out
