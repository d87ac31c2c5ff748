"""The auditor's plain-trained CNN: it learns, it embeds, it refuses malformed images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from patchveil.audit.embedding import (
    EMBEDDING_DIM,
    accuracy,
    embed_images,
    images_to_tensor,
    predict_labels,
    train_embedding_net,
)
from patchveil.errors import PatchveilError


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def two_kinds(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images that are either reddish with a bright top half or bluish with a bright bottom."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.normal(100, 30, (count, 16, 16, 3))
    images[labels == 0, :8, :, 0] += 80
    images[labels == 1, 8:, :, 2] += 80
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def test_images_to_tensor() -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    images[0, 1, 2] = (255, 0, 128)
    tensor = images_to_tensor(images)
    assert tensor.shape == (2, 3, 8, 8)
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    with pytest.raises(PatchveilError, match="uint8"):
        images_to_tensor(images.astype(np.float32))


def test_trains_embeds_and_classifies() -> None:
    images, labels = two_kinds(256)
    trained = train_embedding_net(images, labels, epochs=2, batch_size=64)
    test_images, test_labels = two_kinds(64, seed=1)
    assert accuracy(trained.model, test_images, test_labels) > 0.9
    embedding = embed_images(trained.model, test_images)
    assert embedding.shape == (64, EMBEDDING_DIM) and embedding.dtype == np.float32
    assert np.allclose(embedding, embed_images(trained.model, test_images, batch_size=7), atol=1e-5)
    assert predict_labels(trained.model, test_images[:0]).shape == (0,)
    assert embed_images(trained.model, test_images[:0]).shape == (0, EMBEDDING_DIM)
    assert json.loads(json.dumps(trained.to_json()))["epochs"] == 2


def test_training_is_reproducible_and_checks_labels() -> None:
    images, labels = two_kinds(64)
    first = train_embedding_net(images, labels, epochs=1, batch_size=32, seed=3)
    second = train_embedding_net(images, labels, epochs=1, batch_size=32, seed=3)
    assert np.allclose(embed_images(first.model, images), embed_images(second.model, images))
    with pytest.raises(PatchveilError, match="labels"):
        train_embedding_net(images, labels[:10])
