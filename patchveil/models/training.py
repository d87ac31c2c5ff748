"""The training loop of the shared ViT in plain PyTorch: no Ray, no Prefect, no keys.

Ray Train's per-worker function (`patchveil.models.ray_train`) and the in-memory baseline in
`bench/train_overhead.py` both drive these functions, so they train the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from patchveil.models.augment import AugmentConfig, augment_batch
from patchveil.models.inference import predict
from patchveil.models.preprocess import images_to_tensor


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults train the `cpu` ViT on 32×32 images in minutes."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    unpack_nibbles: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        values["augment"] = AugmentConfig(**values.get("augment", {}))
        return cls(**values)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float


def pick_device(use_gpu: bool | None = None) -> torch.device:
    """CUDA where asked for (or, with None, where present); the CPU otherwise."""
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and embeddings (the usual ViT recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain_vector = parameter.ndim <= 1 or name.endswith(
            ("pos_embed", "window_embed", "cls_token")
        )
        (no_decay if plain_vector else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, stepped once per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def in_memory_batches(
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    batch_size: int,
    generator: np.random.Generator,
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled mini-batches from arrays, in the same dict form Ray Data yields."""
    order = generator.permutation(len(images))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield {
            "image": torch.from_numpy(images[index]),
            "label": torch.from_numpy(labels[index].astype(np.int64)),
            "group": torch.from_numpy(groups[index].astype(np.int64)),
        }


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    num_classes: int,
    patch_size: int,
    device: torch.device,
    generator: torch.Generator,
) -> EpochStats:
    """One pass over `batches` (dicts with uint8 `image`, `label` and `group` tensors)."""
    model.train()
    start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in batches:
        labels = batch["label"].to(device, non_blocking=True)
        inputs = images_to_tensor(batch["image"], config.unpack_nibbles).to(device)
        targets = F.one_hot(labels, num_classes).float()
        inputs, targets = augment_batch(
            inputs, targets, batch["group"].to(device), patch_size, config.augment, generator
        )
        smoothing = config.label_smoothing
        targets = targets * (1 - smoothing) + smoothing / num_classes
        with autocast:
            logits = model(inputs)
        loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        seen += len(labels)
    return EpochStats(
        loss=total_loss / max(1, seen),
        accuracy=correct / max(1, seen),
        images=seen,
        seconds=time.perf_counter() - start,
    )


def accuracy(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    unpack_nibbles: bool = False,
) -> float:
    if len(images) == 0:
        return float("nan")
    predicted = predict(model, images, device, unpack_nibbles).argmax(dim=-1).numpy()
    return float((predicted == labels).mean())
