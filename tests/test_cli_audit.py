"""`patchveil audit`: the auditor's commands on files, one-line errors, no torch or ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patchveil.cli import main
from patchveil.tenants.keystore import PASSPHRASE_ENV


@pytest.fixture
def encrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Smooth 32-px images encrypted by the CLI with block order only, window 2."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    ramp = np.linspace(0, 255, 32)
    images = (
        np.stack(
            [
                np.stack(
                    [
                        np.add.outer(ramp * a, ramp * b) / 2,
                        np.add.outer(ramp, ramp) / 2,
                        np.tile(ramp, (32, 1)),
                    ],
                    -1,
                )
                for a, b in ((1.0, 0.5), (0.3, 1.0), (0.8, 0.8))
            ]
        )
        .clip(0, 255)
        .astype(np.uint8)
    )
    np.save(tmp_path / "plain.npy", images)
    np.save(
        tmp_path / "gallery.npy",
        np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
    )
    store = ["--store", tmp_path / "keys", "--tenant", "auditor"]
    keygen = ["keygen", *store, "--cipher", "disposable", "--block-size", 8, "--image-size", 32]
    assert main([str(a) for a in [*keygen, "--param", "group=none", "--param", "window=2"]]) == 0
    argv = ["encrypt", *store, "--in", tmp_path / "plain.npy", "--out", tmp_path / "c.npz"]
    assert main([str(a) for a in argv]) == 0
    return tmp_path


def test_jigsaw_reassembles_and_scores(encrypted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = ["audit", "jigsaw", "--ciphertexts", encrypted / "c.npz", "--block-size", 8]
    argv += [
        "--window",
        2,
        "--plain",
        encrypted / "plain.npy",
        "--out",
        encrypted / "r.npy",
        "--json",
    ]
    assert main([str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scores"]["direct"] > 0.5  # far above chance (25% in 2×2-block windows)
    assert np.load(encrypted / "r.npy").shape == (3, 32, 32, 3)


def test_linkage_finds_the_sources(encrypted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = [
        "audit",
        "linkage",
        "--ciphertexts",
        encrypted / "c.npz",
        "--plain",
        encrypted / "plain.npy",
    ]
    argv += [
        "--gallery",
        encrypted / "gallery.npy",
        "--cipher",
        "disposable",
        "--param",
        "group=none",
    ]
    argv += ["--param", "window=2", "--block-size", 8, "--json"]
    assert main([str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rank1"] == 1.0 and result["gallery_size"] == 23


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--plain", "gallery.npy"], "same order"),
        (["--out", "r.png"], "must end in .npy"),
        (["--block-size", 5], "does not divide"),
    ],
)
def test_bad_input_is_one_line(
    encrypted: Path, capsys: pytest.CaptureFixture[str], extra: list[object], fragment: str
) -> None:
    capsys.readouterr()
    argv = ["audit", "jigsaw", "--ciphertexts", encrypted / "c.npz", "--block-size", 8]
    argv += [encrypted / str(e) if str(e).endswith((".npy", ".png")) else e for e in extra]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchveil: error:") and fragment in err and err.count("\n") == 1


def test_card_without_results_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "card", "--results", str(tmp_path), "--no-picture"]) == 2
    assert "no attack results" in capsys.readouterr().err


def test_one_known_pair_decrypts_other_images_of_a_shared_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "plain.npy", images)
    store = ["--store", tmp_path / "keys", "--tenant", "bank"]
    keygen = ["keygen", *store, "--cipher", "conventional", "--block-size", 4, "--image-size", 16]
    assert main([str(a) for a in keygen]) == 0
    argv = ["encrypt", *store, "--in", tmp_path / "plain.npy", "--out", tmp_path / "c.npz"]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    argv = ["audit", "keys", "--ciphertexts", tmp_path / "c.npz", "--plain", tmp_path / "plain.npy"]
    assert (
        main([str(a) for a in [*argv, "--cipher", "conventional", "--block-size", 4, "--json"]])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["images_exact"] == 1.0 and result["other_images"] == 3
    refused = [*argv, "--cipher", "disposable", "--block-size", 4]
    assert main([str(a) for a in refused]) == 2
    assert "not a shared-key cipher" in capsys.readouterr().err
