"""`patchveil he train|list`: a model trained into the home, refusals in one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchveil.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATCHVEIL_HOME", str(tmp_path))  # --home sets it; restored after
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet"], "choose one of bag-of-patches, digits"),
        (["--model", "bag-of-patches"], "give --dataset NAME"),
        (["--model", "digits", "--dataset", "cifar"], "trains on UCI digits; drop --dataset"),
        (["--model", "digits", "--name", "Bad/Name"], "model name 'Bad/Name' is not valid"),
        (["--model", "bag-of-patches", "--dataset", "tiny:0"], "NAME or NAME:VERSION"),
    ],
)
def test_bad_training_requests_exit_2_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "he", "train", "--home", home, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not (home / "he-models").exists()


def test_digits_train_and_list(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "he", "list", "--home", home)
    assert code == 0 and "no homomorphic models" in out
    code, out, _ = run(capsys, "he", "train", "--home", home, "--model", "digits", "--epochs", "1")
    assert code == 0 and "epoch 1/1" in out and "/v2/models/digits-he/infer" in out
    code, out, _ = run(capsys, "he", "list", "--home", home, "--json")
    (card,) = json.loads(out)
    assert card["name"] == "digits" and card["image_shape"] == [8, 8, 1]
