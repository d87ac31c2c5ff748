"""The operator's clone check: probe a suspect model, compare its answers with ours, decide.

A suspect is a black box that takes plain images (a clone is trained on its thief's plain
images): an Open Inference Protocol v2 endpoint (`http(s)://host:port`, any KServe-style server),
a TorchScript file taking float images [N, 3, H, W] in [0, 1], or an `.npz` of answers the
suspect already gave on the probes (`labels` [N], optionally `probabilities` [N, C]).

Our side answers the same probes encrypted (the served model reads ciphertext; for a key-free
cipher any tenant's key gives the same answers). The verdict is `ownership.decide` against a
null of independently trained models (`--null`, scored on the same probes), or a calibration
saved by an earlier check on the same probes and model: the shared-error test (does the
suspect repeat our errors more than the null models do; exact p-value) or the watermark test
decides, the mean z-score is reported (rule and assumptions: `ownership`'s docstring). A
calibration file holds the null models' labels per probe, which the shared-error test needs;
files of an earlier format (z-score only) are refused with a request to calibrate again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.serve import ownership

HTTP_BATCH = 128
_CALIBRATION_FORMAT = 2  # 2: the null models' labels per probe (shared-error test)


class CloneCheckError(PatchveilError):
    """A suspect, a probe set or a calibration the clone check cannot use."""


@dataclass(frozen=True)
class SuspectAnswers:
    labels: np.ndarray  # [N] int64
    probabilities: np.ndarray | None  # [N, C] float64, rows summing to 1; None: labels only


class Suspect(Protocol):
    name: str

    def answer(self, images: np.ndarray) -> SuspectAnswers: ...


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)
    exponent = np.exp(shifted)
    return exponent / exponent.sum(axis=1, keepdims=True)


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """Rows that already are distributions stay; anything else is taken for logits."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise CloneCheckError(f"a suspect's scores must be finite [N, C], got {values.shape}")
    if (values >= 0).all() and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return values
    return _softmax(values)


class AnswersFile:
    """Answers a suspect gave earlier on these probes, in probe order."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                self._labels = np.asarray(data["labels"]) if "labels" in data else None
                scores = data.get("probabilities")
                self._probabilities = None if scores is None else as_probabilities(scores)
        except (OSError, ValueError) as error:
            raise CloneCheckError(f"{path}: not a readable .npz of answers ({error})") from None
        if self._labels is None and self._probabilities is None:
            raise CloneCheckError(f"{path} holds neither `labels` nor `probabilities`")

    def answer(self, images: np.ndarray) -> SuspectAnswers:
        labels = self._labels
        if labels is None:
            labels = self._probabilities.argmax(axis=1)  # type: ignore[union-attr]
        if len(labels) != len(images):
            raise CloneCheckError(
                f"{self.name} answers {len(labels)} probes, but the probe set has {len(images)}"
            )
        return SuspectAnswers(np.asarray(labels, dtype=np.int64), self._probabilities)


class TorchScriptSuspect:
    """A suspect model file: TorchScript taking float [N, 3, H, W] in [0, 1], giving scores."""

    def __init__(self, path: Path, batch_size: int = 256) -> None:
        import torch

        self.name = str(path)
        self._batch_size = batch_size
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated
                self._module = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            raise CloneCheckError(f"{path}: not a TorchScript model ({first})") from None

    def answer(self, images: np.ndarray) -> SuspectAnswers:
        import torch

        outputs = []
        with torch.no_grad():
            for start in range(0, len(images), self._batch_size):
                batch = torch.from_numpy(
                    np.ascontiguousarray(images[start : start + self._batch_size])
                )
                inputs = batch.permute(0, 3, 1, 2).float() / 255.0
                try:
                    outputs.append(self._module(inputs).float().numpy())
                except RuntimeError as error:
                    first = str(error).strip().splitlines()[0]
                    raise CloneCheckError(f"{self.name} failed on the probes: {first}") from None
        probabilities = as_probabilities(np.concatenate(outputs))
        return SuspectAnswers(probabilities.argmax(axis=1).astype(np.int64), probabilities)


class HttpSuspect:
    """A suspect behind an Open Inference Protocol v2 endpoint, sent plain UINT8 images."""

    def __init__(
        self, url: str, model: str | None = None, token: str | None = None, timeout_s: float = 60
    ) -> None:
        import httpx

        self.name = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._model = model or self._only_model()

    def _get(self, path: str) -> Any:
        import httpx

        try:
            response = self._client.get(path)
        except httpx.HTTPError as error:
            raise CloneCheckError(f"suspect {self.name}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise CloneCheckError(f"suspect {self.name}{path}: HTTP {response.status_code}")
        return response.json()

    def _only_model(self) -> str:
        models = self._get("/v2/models").get("models", [])
        if len(models) != 1:
            raise CloneCheckError(
                f"suspect {self.name} serves {len(models)} models; name one with --suspect-model"
            )
        return str(models[0]["name"] if isinstance(models[0], dict) else models[0])

    def _infer(self, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        import httpx

        body = {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": list(images.shape),
                    "data": images.reshape(-1).tolist(),
                }
            ]
        }
        try:
            response = self._client.post(f"/v2/models/{self._model}/infer", json=body)
        except httpx.HTTPError as error:
            raise CloneCheckError(f"suspect {self.name}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise CloneCheckError(
                f"suspect {self.name} answered HTTP {response.status_code} to the probes"
            )
        labels = scores = None
        for output in response.json().get("outputs", []):
            shape, data = output.get("shape", []), output.get("data", [])
            if len(shape) == 2 and shape[0] == len(images):
                scores = np.asarray(data, dtype=np.float64).reshape(shape)
            elif shape == [len(images)] and str(output.get("datatype", "")).startswith(
                ("INT", "UINT")
            ):
                labels = np.asarray(data, dtype=np.int64)
        if labels is None and scores is None:
            raise CloneCheckError(
                f"suspect {self.name} gave no [N] integer labels or [N, C] scores for N probes"
            )
        return labels, scores

    def answer(self, images: np.ndarray) -> SuspectAnswers:
        labels, scores = [], []
        for start in range(0, len(images), HTTP_BATCH):
            found, score = self._infer(np.ascontiguousarray(images[start : start + HTTP_BATCH]))
            labels.append(found)
            scores.append(score)
        probabilities = None
        if all(s is not None for s in scores):
            probabilities = as_probabilities(np.concatenate(scores))  # type: ignore[arg-type]
        if all(found is not None for found in labels):
            label_array = np.concatenate(labels)  # type: ignore[arg-type]
        elif probabilities is not None:
            label_array = probabilities.argmax(axis=1)
        else:
            raise CloneCheckError(f"suspect {self.name} answered some batches without labels")
        return SuspectAnswers(label_array.astype(np.int64), probabilities)

    def close(self) -> None:
        self._client.close()


def open_suspect(
    where: str, model: str | None = None, token: str | None = None
) -> AnswersFile | TorchScriptSuspect | HttpSuspect:
    """A suspect from a URL (OIP v2), a TorchScript file or an `.npz` of answers."""
    if where.startswith(("http://", "https://")):
        return HttpSuspect(where, model, token)
    path = Path(where)
    if not path.is_file():
        raise CloneCheckError(f"suspect {where}: no such file (or give an http(s):// URL)")
    if path.suffix == ".npz":
        return AnswersFile(path)
    return TorchScriptSuspect(path)


def watermark_labels(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Our watermark label where a probe falls in a watermarked code, −1 elsewhere."""
    return np.where(np.asarray(mask, dtype=bool), np.asarray(labels, dtype=np.int64), -1)


def probe_digest(images: np.ndarray) -> str:
    """Which probe set a calibration belongs to (a hash of the plain probes' bytes)."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()[:16]


def scores_of(
    suspect: Suspect,
    probes: np.ndarray,
    our_probabilities: np.ndarray,
    our_watermark: np.ndarray | None,
    true_labels: np.ndarray | None = None,
) -> ownership.SuspectScores:
    """A suspect's answers on the probes compared with ours; `true_labels` [N], when the
    operator has the probes' labels, restrict the shared-error test to our wrong answers."""
    answers = suspect.answer(probes)
    if answers.probabilities is not None and answers.probabilities.shape != our_probabilities.shape:
        raise CloneCheckError(
            f"{suspect.name} scores {answers.probabilities.shape[1]} classes; ours "
            f"{our_probabilities.shape[1]}"
        )
    return ownership.suspect_scores(
        our_probabilities, answers.labels, answers.probabilities, our_watermark, true_labels
    )


def save_calibration(
    path: Path, calibration: ownership.NullCalibration, model: str, version: int, probes: str
) -> None:
    document = {
        "format": _CALIBRATION_FORMAT,
        "model": model,
        "model_version": version,
        "probe_digest": probes,
        **calibration.to_json(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_calibration(
    path: Path, model: str, version: int, probes: str
) -> ownership.NullCalibration:
    try:
        document = json.loads(path.read_text())
        version_found = document["format"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CloneCheckError(f"{path}: not a clone-check calibration file") from None
    if version_found != _CALIBRATION_FORMAT:
        raise CloneCheckError(
            f"{path} is a format-{version_found} calibration; this check needs format "
            f"{_CALIBRATION_FORMAT} (the null models' labels per probe, for the shared-error "
            "test): calibrate again with --null and --save-calibration"
        )
    try:
        found = (document["model"], int(document["model_version"]), document["probe_digest"])
        null_labels = tuple(tuple(int(label) for label in row) for row in document["null_labels"])
        calibration = ownership.NullCalibration(
            means={k: float(v) for k, v in document["means"].items()},
            scales={k: float(v) for k, v in document["scales"].items()},
            models=int(document["models"]),
            watermark_chance=float(document["watermark_chance"]),
            null_labels=null_labels,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CloneCheckError(f"{path}: not a clone-check calibration file") from None
    if len(null_labels) != calibration.models or len({len(row) for row in null_labels}) > 1:
        raise CloneCheckError(
            f"{path} holds labels of {len(null_labels)} null models for {calibration.models}; "
            "calibrate again with --null"
        )
    if found != (model, version, probes):
        raise CloneCheckError(
            f"{path} calibrates {found[0]} v{found[1]} on other probes; calibrate again with "
            "--null on these probes and this model"
        )
    return calibration


def calibrate_on(
    nulls: Sequence[Suspect],
    probes: np.ndarray,
    our_probabilities: np.ndarray,
    our_watermark: np.ndarray | None,
    true_labels: np.ndarray | None = None,
) -> tuple[ownership.NullCalibration, list[ownership.SuspectScores]]:
    """The null models' calibration on these probes, and each one's scores."""
    scored = [
        scores_of(null, probes, our_probabilities, our_watermark, true_labels) for null in nulls
    ]
    return ownership.calibrate(scored), scored


__all__ = [
    "AnswersFile",
    "CloneCheckError",
    "HttpSuspect",
    "SuspectAnswers",
    "TorchScriptSuspect",
    "as_probabilities",
    "calibrate_on",
    "load_calibration",
    "open_suspect",
    "probe_digest",
    "save_calibration",
    "scores_of",
    "watermark_labels",
]
