"""Predictions of a trained ViT on ciphertext (platform side: no key, no plain image).

Validation during training, the tests and a Serve deployment all call `predict`, so a model
answers the same way wherever it runs.
"""

from __future__ import annotations

import numpy as np
import torch

from patchveil.models.preprocess import images_to_tensor


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
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for start in range(0, len(images), batch_size):
        inputs = images_to_tensor(images[start : start + batch_size], unpack_nibbles).to(device)
        with autocast:
            outputs.append(model(inputs).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)
