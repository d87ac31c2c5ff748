"""The model a replica answers with: a registry model version loaded from its checkpoint.

Platform side: the checkpoint holds weights trained on ciphertext, nothing of a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchveil.errors import PatchveilError
from patchveil.models.checkpoint import load_trained_model
from patchveil.models.inference import predict_with_embeddings
from patchveil.models.reference import load_reference_embeddings
from patchveil.registry.registry import ModelVersionRecord, Registry


@dataclass(frozen=True)
class ModelRef:
    """Which model version to serve (plain fields: travels in a Serve `user_config`)."""

    name: str
    version: int
    checkpoint_uri: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "checkpoint_uri": self.checkpoint_uri}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModelRef:
        return cls(str(data["name"]), int(data["version"]), str(data["checkpoint_uri"]))  # type: ignore[call-overload]


def resolve_model(registry_url: str, name: str, version: int | None = None) -> ModelVersionRecord:
    """The registry's record of `name` at `version` (default: the newest)."""
    with Registry(registry_url) as registry:
        records = registry.list_model_versions(name)
        names = sorted({record.name for record in registry.list_model_versions()})
    if not records:
        known = ", ".join(names) if names else "none yet: train one with `patchveil train`"
        raise PatchveilError(f"no model named {name!r} in the registry (models: {known})")
    if version is None:
        return records[-1]
    for record in records:
        if record.version == version:
            return record
    raise PatchveilError(
        f"model {name!r} has no version {version} (versions: "
        f"{', '.join(str(record.version) for record in records)})"
    )


@dataclass(frozen=True)
class Forward:
    """One forward pass's answer for a batch: class probabilities and pre-logits embeddings."""

    probabilities: np.ndarray  # [N, classes] float32
    embeddings: np.ndarray  # [N, D] float32
    model_version: int


class LoadedModel:
    """A model version in memory, answering `forward(images)` with `predict_with_embeddings`."""

    def __init__(self, ref: ModelRef, use_gpu: bool = False) -> None:
        self.ref = ref
        self.model, self.spec = load_trained_model(ref.checkpoint_uri)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.reference_embeddings = load_reference_embeddings(ref.checkpoint_uri)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def head_weight(self) -> np.ndarray:
        """The classifier's weight rows [classes, D] (which classes the model finds alike)."""
        return self.model.get_classifier().weight.detach().float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """What the gateway needs to know of this version: its shapes, the head's weights and
        the reference embeddings (the defence's and the monitor's fit)."""
        return {
            "name": self.ref.name,
            "version": self.ref.version,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "head_weight": self.head_weight(),
            "reference_embeddings": self.reference_embeddings,
        }

    def forward(self, images: np.ndarray) -> Forward:
        logits, embeddings = predict_with_embeddings(
            self.model, images, self.device, unpack_nibbles=self.spec.in_chans == 6
        )
        return Forward(
            probabilities=torch.softmax(logits, dim=1).numpy().astype(np.float32),
            embeddings=embeddings.numpy().astype(np.float32),
            model_version=self.ref.version,
        )


def split_forward(answer: Forward, sizes: list[int]) -> list[Forward]:
    """One forward pass over several requests' images, cut back into one answer per request."""
    parts, start = [], 0
    for size in sizes:
        stop = start + size
        parts.append(
            Forward(
                answer.probabilities[start:stop],
                answer.embeddings[start:stop],
                answer.model_version,
            )
        )
        start = stop
    return parts
