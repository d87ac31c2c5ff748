"""A tiny homomorphic model saved under a platform home, for the HE service and route tests."""

from __future__ import annotations

from pathlib import Path

from patchveil.models.he_models import HEModelCard, save_he_model
from tests.serve.test_he_inference import tiny_net

HE_MODEL = "tiny"


def save_tiny_he_model(home: Path, name: str = HE_MODEL) -> HEModelCard:
    """The evaluator tests' 4×4 grey network (2×2 windows, 2 classes) as a servable model."""
    net = tiny_net()
    net = type(net)(**{**net.__dict__, "name": name})
    card = HEModelCard(
        name=name,
        preset="digits",
        dataset="random weights (tests)",
        image_shape=net.layout.image_shape,
        kernel_size=net.layout.kernel_size,
        stride=net.layout.stride,
        pool=net.pool,
        classes=net.classes,
        pixel_scale=1.0,
        plain_accuracy=0.0,
        test_images=0,
        train_seconds=0.0,
        trained_at="2026-01-01T00:00:00+00:00",
    )
    return save_he_model(home, card, net)
