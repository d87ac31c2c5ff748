"""Predictions of a trained ViT on ciphertext (platform side: no key, no plain image).

Validation during training, the tests and the Serve deployment all go through `predict` or
`predict_with_embeddings`, so a model answers the same way wherever it runs.
"""

from __future__ import annotations

import numpy as np
import torch

from patchveil.models.preprocess import images_to_tensor


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    unpack_nibbles: bool = False,
    batch_size: int = 512,
) -> torch.Tensor:
    """Logits [N, classes] on the CPU for uint8 images [N, H, W, 3] (ciphertext under the
    tenant's own key); bfloat16 autocast on a GPU, batches of `batch_size`."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        inputs = images_to_tensor(images[start : start + batch_size], unpack_nibbles).to(device)
        with _autocast(device):
            outputs.append(model(inputs).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


@torch.no_grad()
def predict_with_embeddings(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    unpack_nibbles: bool = False,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, classes] and the pre-logits embedding [N, D] of a timm ViT, both on the CPU.

    The embedding is what the head reads: for a model trained to answer the same under every
    key, it is (nearly) the same for every encryption of one image, which is what the clone
    defence hashes and the monitor measures distances in.
    """
    model.eval()
    logits, embeddings = [], []
    for start in range(0, len(images), batch_size):
        inputs = images_to_tensor(images[start : start + batch_size], unpack_nibbles).to(device)
        with _autocast(device):
            features = model.forward_head(model.forward_features(inputs), pre_logits=True)
            logits.append(model.get_classifier()(features).float().cpu())
        embeddings.append(features.float().cpu())
    if not logits:
        return torch.empty(0), torch.empty(0)
    return torch.cat(logits), torch.cat(embeddings)
