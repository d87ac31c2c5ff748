"""A small CNN trained here on plain images: its penultimate layer is the auditor's embedding.

The leakage estimators (`patchveil.audit.leakage`) measure mutual information between plain
and encrypted images in this embedding space (Messadi et al. 2025), and the learned-inversion
audit (`patchveil.audit.inversion`) uses the same network as the independent plain-trained
classifier that scores recognisability. Nothing is downloaded: the weights come from a few
epochs on the plain images the auditor holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from patchveil.errors import PatchveilError

EMBEDDING_DIM = 128


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [-1, 1] on `device`."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise PatchveilError(
            f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class EmbeddingNet(nn.Module):
    """Three conv stages (one 3×3 conv each, ~10 MMAC per image) and global pooling (the embedding), then a linear classifier."""

    def __init__(self, classes: int = 10, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()

        def stage(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            stage(3, 32), stage(32, 64), stage(64, embedding_dim), nn.AdaptiveAvgPool2d(1)
        )
        self.classifier = nn.Linear(embedding_dim, classes)
        self.embedding_dim = embedding_dim
        self.classes = classes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@dataclass(frozen=True)
class TrainedEmbedding:
    """A trained `EmbeddingNet` and what it was trained on (for reports)."""

    model: EmbeddingNet
    train_images: int
    epochs: int
    train_accuracy: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "train_images": self.train_images,
            "epochs": self.epochs,
            "train_accuracy": self.train_accuracy,
            "embedding_dim": self.model.embedding_dim,
        }


def train_embedding_net(
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> TrainedEmbedding:
    """Train an `EmbeddingNet` on plain labelled images (random flips; AdamW, one-cycle)."""
    if len(images) != len(labels) or len(images) == 0:
        raise PatchveilError(
            f"need as many labels as images (> 0), got {len(images)}, {len(labels)}"
        )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classes = int(labels.max()) + 1
    model = EmbeddingNet(classes=max(classes, 2)).to(device)
    inputs = images_to_tensor(images, "cpu")
    targets = torch.from_numpy(labels.astype(np.int64))
    steps_per_epoch = max(1, -(-len(images) // batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(1, epochs * steps_per_epoch)
    )
    correct = seen = 0
    model.train()
    for _ in range(epochs):
        correct = seen = 0
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            batch = inputs[index]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch).to(device)
            target = targets[index].to(device)
            logits = model(batch)
            loss = nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
    model.eval()
    return TrainedEmbedding(model, len(images), epochs, correct / max(seen, 1))


@torch.no_grad()
def _batched(
    function: Any, images: np.ndarray, batch_size: int, device: str | torch.device
) -> list[torch.Tensor]:
    """`function` applied to the images batch by batch (on `device`), results on the CPU."""
    return [
        function(images_to_tensor(images[start : start + batch_size], device)).cpu()
        for start in range(0, len(images), batch_size)
    ]


def embed_images(
    model: EmbeddingNet,
    images: np.ndarray,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The penultimate-layer embedding [N, D] (float32) of uint8 images [N, H, W, 3]."""
    model = model.to(device).eval()
    parts = _batched(model.embed, images, batch_size, device)
    if not parts:
        return np.zeros((0, model.embedding_dim), dtype=np.float32)
    return torch.cat(parts).numpy().astype(np.float32)


def predict_labels(
    model: EmbeddingNet,
    images: np.ndarray,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The class the network predicts for each uint8 image [N, H, W, 3]."""
    model = model.to(device).eval()
    parts = _batched(lambda batch: model(batch).argmax(1), images, batch_size, device)
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.int64)


def accuracy(
    model: EmbeddingNet,
    images: np.ndarray,
    labels: np.ndarray,
    device: str | torch.device = "cpu",
) -> float:
    """Share of images the network labels correctly."""
    if len(images) == 0:
        raise PatchveilError("accuracy of an empty image set is undefined")
    return float((predict_labels(model, images, device=device) == labels).mean())
