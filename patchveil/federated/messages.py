"""What crosses the trust boundary in a federated round: the plan out, the shared update back.

Plain frozen dataclasses of names, numbers and weight arrays. An update holds every parameter
of the model except the key lock's, and never a key (tests search its bytes for the key vector).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchveil.models.small_nets import NetSpec

#: Weights by state-dict name, as numpy arrays (what Ray ships without torch on the wire).
Weights = tuple[tuple[str, np.ndarray], ...]


@dataclass(frozen=True)
class LocalTraining:
    """How a tenant trains in one round: epochs over its own images, batch size, Adam's rate."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-3


@dataclass(frozen=True)
class RoundPlan:
    """Round `round_index`: the model, the global shared weights, how to train locally."""

    round_index: int
    net: NetSpec
    global_weights: Weights
    training: LocalTraining
    seed: int = 0


@dataclass(frozen=True)
class ClientUpdate:
    """One tenant's answer: its shared weights after local training, and on how many images."""

    tenant_id: str
    round_index: int
    num_samples: int
    weights: Weights
    train_loss: float


@dataclass(frozen=True)
class ClientEvaluation:
    """A tenant's accuracy of the global model with its own lock, on its own held-out images."""

    tenant_id: str
    round_index: int
    images: int
    accuracy: float


@dataclass(frozen=True)
class ClientInfo:
    """Which tenant a federated client serves, how many training images it holds, its process."""

    tenant_id: str
    num_samples: int
    pid: int
