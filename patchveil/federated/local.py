"""Local training and evaluation of a federated model on one tenant's images (pure torch, no I/O)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from patchveil.federated.messages import LocalTraining


def to_inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [0, 1] (what the federated models read)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def train_locally(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    training: LocalTraining,
    seed: int,
    parameters: list[nn.Parameter] | None = None,
) -> float:
    """`training.epochs` of Adam over the images in a seeded order; the mean loss of the last epoch.

    `parameters` limits what trains (all of the model's by default).
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(
        parameters if parameters is not None else list(model.parameters()),
        lr=training.learning_rate,
    )
    inputs, targets = to_inputs(images), torch.from_numpy(labels.astype(np.int64))
    model.train()
    last_epoch_loss = 0.0
    for _ in range(training.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), training.batch_size):
            batch = order[start : start + training.batch_size]
            if len(batch) < 2 and len(order) > 1:
                continue  # batch statistics need two images; the lock normalises by them
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        last_epoch_loss = total / max(seen, 1)
    return last_epoch_loss


@torch.no_grad()
def accuracy(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 256
) -> float:
    """Top-1 accuracy in eval mode (the lock normalises each batch by itself, as in training)."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(to_inputs(images[start : start + batch_size]))
        correct += int((logits.argmax(dim=1).numpy() == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)
