"""The operator's clone check: suspects as files, TorchScript models and OIP v2 URLs; the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from patchveil.cli import main
from patchveil.config import PlatformConfig
from patchveil.models.checkpoint import load_trained_model
from patchveil.registry.registry import Registry
from patchveil.serve.clone_check import (
    AnswersFile,
    CloneCheckError,
    HttpSuspect,
    TorchScriptSuspect,
    as_probabilities,
    load_calibration,
    open_suspect,
    save_calibration,
)
from patchveil.serve.ownership import NullCalibration
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore
from tests.serve.conftest import BLOCK_SIZE, IMAGE_SIZE, MODEL_NAME, register_model

PROBES = 96


class PlainWrapper(torch.nn.Module):
    """A suspect built from a ViT: plain float images in [0, 1] to logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images * 2.0 - 1.0)


def traced(model: torch.nn.Module, path: Path) -> Path:
    example = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.jit.trace(PlainWrapper(model.eval()), example).save(str(path))
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A home with our model (v1), the operator's key store, plain probes, a perfect clone
    (our own weights, which are invariant to block order: the same answers on plain images)
    and three independently initialised models as the null."""
    home = tmp_path_factory.mktemp("clone-home")
    config = PlatformConfig(home=home)
    with Registry(config.registry_url) as registry:
        register_model(registry, home / "checkpoints", 1)
        (record,) = registry.list_model_versions(MODEL_NAME)
    store = home / "operator-keys"
    KeyStore(store).create(
        "operator", CipherSpec("disposable", BLOCK_SIZE, IMAGE_SIZE, (("group", "none"),))
    )
    probes = np.random.default_rng(0).integers(0, 256, (PROBES, IMAGE_SIZE, IMAGE_SIZE, 3))
    probe_file = home / "probes.npy"
    np.save(probe_file, probes.astype(np.uint8))
    ours, _ = load_trained_model(record.checkpoint_uri)
    clone = traced(ours, home / "clone.pt")
    nulls = []
    for seed in (11, 12, 13):
        torch.manual_seed(seed)
        other, _ = load_trained_model(record.checkpoint_uri)
        for parameter in other.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
        nulls.append(traced(other, home / f"null-{seed}.pt"))
    return {
        "home": home,
        "store": store,
        "probes": probe_file,
        "clone": clone,
        "nulls": nulls,
        "images": probes.astype(np.uint8),
    }


def run_check(platform: dict[str, Any], suspect: str, *extra: str) -> dict[str, Any]:
    import contextlib
    import io

    arguments = [
        "clone-check",
        "--home",
        str(platform["home"]),
        "--model",
        MODEL_NAME,
        "--suspect",
        suspect,
        "--probes",
        str(platform["probes"]),
        "--store",
        str(platform["store"]),
        "--tenant",
        "operator",
        "--json",
        *extra,
    ]
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(arguments) == 0
    return json.loads(output.getvalue().strip().splitlines()[-1])


def null_arguments(platform: dict[str, Any]) -> list[str]:
    return [item for path in platform["nulls"] for item in ("--null", str(path))]


def test_the_cli_names_a_clone_and_clears_an_independent_model(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    calibration = tmp_path / "calibration.json"
    found = run_check(
        platform,
        str(platform["clone"]),
        *null_arguments(platform),
        "--save-calibration",
        str(calibration),
    )
    assert found["is_clone"] and found["scores"]["label_agreement"] == pytest.approx(1.0)
    assert found["model_version"] == 1 and found["probes"] == PROBES
    assert found["null_models"] == 3
    shared = found["shared_errors"]
    assert shared["p_value"] <= found["significance"] and shared["rate"] == pytest.approx(1.0)
    assert shared["null_models"] == 3 and not shared["true_labels"]
    assert any("repeats" in reason for reason in found["reasons"])
    assert len(json.loads(calibration.read_text())["null_labels"]) == 3
    # An independent model checked against the saved calibration of the other two... and the
    # saved calibration is reused without the null models.
    again = run_check(platform, str(platform["clone"]), "--calibration", str(calibration))
    assert again["score"] == pytest.approx(found["score"])
    assert again["shared_errors"] == found["shared_errors"] and again["is_clone"]
    others = [item for path in platform["nulls"][1:] for item in ("--null", str(path))]
    independent = run_check(platform, str(platform["nulls"][0]), *others)
    assert not independent["is_clone"] and independent["shared_errors"]["p_value"] > 0.01


def test_true_probe_labels_restrict_the_test_to_our_wrong_answers(
    platform: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = np.arange(PROBES) % 10
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    found = run_check(
        platform, str(platform["clone"]), *null_arguments(platform), "--probe-labels", str(path)
    )
    shared = found["shared_errors"]
    assert found["is_clone"] and shared["true_labels"] and shared["rate"] == pytest.approx(1.0)
    # A printed verdict names the deciding test first; bad labels are one line, exit 2.
    base = ["clone-check", "--home", str(platform["home"]), "--model", MODEL_NAME]
    base += ["--probes", str(platform["probes"]), "--store", str(platform["store"])]
    base += ["--tenant", "operator", "--suspect", str(platform["clone"])]
    base += null_arguments(platform)
    assert main([*base, "--probe-labels", str(path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "CLONE" in first and "shared-error p" in first
    np.save(tmp_path / "short.npy", labels[:-1])
    assert main([*base, "--probe-labels", str(tmp_path / "short.npy")]) == 2
    error = capsys.readouterr().err
    assert f"{PROBES} integer labels" in error and len(error.strip().splitlines()) == 1


def test_a_calibration_for_other_probes_is_refused(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "calibration.json"
    calibration = NullCalibration(
        {"label_agreement": 0.1}, {"label_agreement": 0.05}, 2, 0.05, ((0, 1, 2), (2, 1, 0))
    )
    save_calibration(path, calibration, MODEL_NAME, 1, "another-probe-set")
    with pytest.raises(CloneCheckError, match="other probes"):
        load_calibration(path, MODEL_NAME, 1, "this-probe-set")
    assert load_calibration(path, MODEL_NAME, 1, "another-probe-set") == calibration
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(CloneCheckError, match="not a clone-check calibration"):
        load_calibration(tmp_path / "junk.json", MODEL_NAME, 1, "x")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CloneCheckError, match="not a clone-check calibration"):
        load_calibration(tmp_path / "list.json", MODEL_NAME, 1, "x")


def test_a_calibration_without_the_null_models_labels_is_refused(tmp_path: Path) -> None:
    """Format 1 (the z-score's means and spreads only) cannot feed the shared-error test."""
    document = {
        "format": 1,
        "model": MODEL_NAME,
        "model_version": 1,
        "probe_digest": "0123456789abcdef",
        "means": {"label_agreement": 0.39},
        "scales": {"label_agreement": 0.02},
        "models": 4,
        "watermark_chance": 0.05,
    }
    old = tmp_path / "old.json"
    old.write_text(json.dumps(document))
    with pytest.raises(CloneCheckError, match=r"format-1 calibration.*calibrate again"):
        load_calibration(old, MODEL_NAME, 1, document["probe_digest"])
    short = NullCalibration({"label_agreement": 0.1}, {"label_agreement": 0.05}, 2, 0.05)
    save_calibration(tmp_path / "short.json", short, MODEL_NAME, 1, "probes")
    with pytest.raises(CloneCheckError, match="labels of 0 null models for 2"):
        load_calibration(tmp_path / "short.json", MODEL_NAME, 1, "probes")


def test_usage_errors_are_one_line_before_any_model_loads(
    platform: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["clone-check", "--home", str(platform["home"]), "--model", MODEL_NAME]
    base += ["--probes", str(platform["probes"]), "--store", str(platform["store"])]
    base += ["--tenant", "operator"]
    assert main([*base, "--suspect", "/nowhere/model.pt", "--null", "x.pt"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([*base, "--suspect", str(platform["clone"])]) == 2
    error = capsys.readouterr().err
    assert "--null" in error and len(error.strip().splitlines()) == 1


def test_answers_file_and_probabilities(tmp_path: Path) -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    probabilities = as_probabilities(logits)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert np.array_equal(as_probabilities(probabilities), probabilities)
    path = tmp_path / "answers.npz"
    np.savez(path, probabilities=probabilities)
    found = AnswersFile(path).answer(np.zeros((2, 4, 4, 3), np.uint8))
    assert found.labels.tolist() == [0, 1]
    with pytest.raises(CloneCheckError, match="answers 2 probes"):
        AnswersFile(path).answer(np.zeros((3, 4, 4, 3), np.uint8))
    np.savez(tmp_path / "empty.npz", other=np.zeros(2))
    with pytest.raises(CloneCheckError, match="neither"):
        open_suspect(str(tmp_path / "empty.npz"))
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    with pytest.raises(CloneCheckError, match="not a TorchScript model"):
        TorchScriptSuspect(tmp_path / "broken.pt")


class _OipSuspect(BaseHTTPRequestHandler):
    """A minimal OIP v2 server for a TorchScript suspect: `logits` [N, C] FP32 out."""

    module: Any = None

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"models": ["suspect"]})

    def do_POST(self) -> None:
        if self.path != "/v2/models/suspect/infer":
            self._send(404, {"error": "no such model"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tensor = body["inputs"][0]
        images = np.asarray(tensor["data"], dtype=np.uint8).reshape(tensor["shape"])
        inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            logits = self.module(inputs).numpy()
        output = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
        self._send(200, {"outputs": [{**output, "data": logits.reshape(-1).tolist()}]})


@pytest.fixture
def suspect_url(platform: dict[str, Any]) -> Iterator[str]:
    handler = type("Handler", (_OipSuspect,), {"module": torch.jit.load(str(platform["clone"]))})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_suspect_behind_an_oip_endpoint_answers_like_its_file(
    platform: dict[str, Any], suspect_url: str
) -> None:
    images = platform["images"][:40]  # more than one HTTP batch would need 129+; one is enough
    over_http = HttpSuspect(suspect_url).answer(images)
    from_file = TorchScriptSuspect(platform["clone"]).answer(images)
    assert np.array_equal(over_http.labels, from_file.labels)
    assert np.allclose(over_http.probabilities, from_file.probabilities, atol=1e-5)
    found = run_check(platform, suspect_url, *null_arguments(platform))
    assert found["is_clone"]
    with pytest.raises(CloneCheckError, match="HTTP 404"):
        HttpSuspect(suspect_url, model="other").answer(images)
