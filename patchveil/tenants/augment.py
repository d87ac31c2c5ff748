"""Plain-image augmentation on the tenant's side: random crop with padding and horizontal flip.

A tenant that wants more training data augments its plain images before encrypting them, so
the platform receives extra ciphertexts and never a plain pixel. The randomness is numpy's
seeded generator on purpose: it is not key material, and drawing it from (tenant, image index,
variant) makes every variant reproducible, so a retried shard is byte for byte the same.
"""

from __future__ import annotations

import hashlib

import numpy as np

from patchveil.errors import ImageFormatError

CROP_PADDING = 4


def tenant_seed(tenant_id: str) -> int:
    """A fixed 63-bit seed per tenant, so two tenants' augmentations are unrelated."""
    digest = hashlib.sha256(f"patchveil/augment/{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def crop_and_flip(
    image: np.ndarray, generator: np.random.Generator, padding: int = CROP_PADDING
) -> np.ndarray:
    """One image [H, W, 3]: zero-pad by `padding`, crop a random H×W window, flip with p=1/2."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    top, left = generator.integers(0, 2 * padding + 1, size=2)
    crop = padded[top : top + height, left : left + width]
    return crop[:, ::-1] if generator.random() < 0.5 else crop


def augment_variant(
    images: np.ndarray,
    image_indices: np.ndarray,
    variant: int,
    seed: int,
    padding: int = CROP_PADDING,
) -> np.ndarray:
    """Variant number `variant` (1, 2, …) of each image, drawn from (seed, image index, variant)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ImageFormatError(
            f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}"
        )
    indices = np.asarray(image_indices, dtype=np.int64)
    if indices.shape != (len(images),):
        raise ImageFormatError(
            f"give one image index per image ({len(images)}), got {list(indices.shape)}"
        )
    if variant < 1:
        raise ValueError(f"variants are numbered from 1, got {variant}")
    out = np.empty_like(images)
    for row, (image, index) in enumerate(zip(images, indices.tolist(), strict=True)):
        generator = np.random.default_rng([seed, index, variant])
        out[row] = crop_and_flip(image, generator, padding)
    return out
