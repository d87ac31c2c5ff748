"""Conversions between torch state dicts and the numpy `Weights` of the federated messages."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from patchveil.federated.messages import Weights


def to_weights(state: Mapping[str, torch.Tensor]) -> Weights:
    return tuple((name, value.detach().cpu().numpy().copy()) for name, value in state.items())


def to_state(weights: Weights) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(value, copy=True)) for name, value in weights}
