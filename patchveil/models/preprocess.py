"""Turn uint8 images [N, H, W, 3] into the model's float input, with one fixed normalisation."""

from __future__ import annotations

import numpy as np
import torch

from patchveil.errors import ImageFormatError

# v → (2v − 255) / 255 is v / 127.5 − 1 computed so that 255 − v maps to exactly −x, bit for bit:
# the numerator is an exact integer and division rounds symmetrically about zero. One scale for
# every channel means negative–positive is a sign flip and colour shuffling needs no statistics.
BYTE_MAX = 255
NIBBLE_MAX = 15


def images_to_tensor(
    images: torch.Tensor | np.ndarray,
    unpack_nibbles: bool = False,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, C, H, W] in [−1, 1]; C = 6 with `unpack_nibbles`.

    `unpack_nibbles` (for `le` ciphertexts) splits every byte into its high and low 4-bit values,
    giving channels (R_high, R_low, G_high, G_low, B_high, B_low): the (row, column, channel)
    element order the `le` cipher shuffles. Nibbles are scaled as v / 7.5 − 1, so 15 − v is again
    an exact sign flip. No key is involved.
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = np.array(images)  # torch wants writable memory (e.g. a request's bytes)
    batch = (
        torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    )
    if not isinstance(batch, torch.Tensor):
        raise ImageFormatError(
            f"images must be a numpy array or torch tensor, got {type(images).__name__}"
        )
    if batch.dtype != torch.uint8:
        raise ImageFormatError(f"images must be uint8, got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ImageFormatError(
            f"images must have shape [N, H, W, 3], got {list(batch.shape)} "
            "(add a leading axis for a single image)"
        )
    if unpack_nibbles:
        values = torch.stack((batch >> 4, batch & 0x0F), dim=-1).flatten(-2)
        top = NIBBLE_MAX
    else:
        values, top = batch, BYTE_MAX
    scaled = (values.to(dtype) * 2 - top) / top
    return scaled.permute(0, 3, 1, 2).contiguous()
