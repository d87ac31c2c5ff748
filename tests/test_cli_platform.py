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


_PROBE = """
import json, sys
from patchveil.cli import main
code = main(sys.argv[1:])
print("REPORT " + json.dumps({"code": code, "loaded": sorted(
    name for name in ("prefect", "ray", "torch") if name in sys.modules)}))
"""


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--source", "nowhere.npz", "--cipher", "disposable"], "nowhere.npz does not exist"),
        (["--source", "{src}", "--cipher", "rot13"], "unknown cipher 'rot13'"),
        (["--source", "{src}", "--cipher", "plain"], "does not encrypt"),
        (["--source", "{src}", "--cipher", "disposable", "--param", "colour=1"], "no parameter"),
    ],
)
def test_onboarding_mistakes_fail_before_any_service_starts(
    tmp_path: Path, extra: list[str], fragment: str
) -> None:
    """One line, exit 2, and neither Prefect nor Ray (nor torch) was even imported."""
    import os
    import subprocess
    import sys

    source = tmp_path / "images.npy"
    source.write_bytes(b"")
    argv = ["tenant", "onboard", "--home", str(tmp_path / "home"), "--tenant", "acme"]
    argv += ["--block-size", "4", *(str(source) if a == "{src}" else a for a in extra)]
    repo = Path(__file__).resolve().parents[1]
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=60,
        check=False,
    )
    report = json.loads(probe.stdout.rsplit("REPORT ", 1)[1])
    assert report == {"code": 2, "loaded": []}, probe.stderr
    assert probe.stderr.count("\n") == 1 and fragment in probe.stderr
    assert not (tmp_path / "home").exists()
