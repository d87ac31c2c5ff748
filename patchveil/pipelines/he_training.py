"""Train a servable homomorphic model and keep it under the platform home.

`train_he_model(config, preset_name, ...)` reads like the runbook: load the preset's data (the
public UCI digits, or a published ciphertext dataset version: the platform's own key-free data,
never a key or a plain image), fit the square-activation network in plain, measure it on the
held-out images, and save weights and card to `<home>/he-models/<name>/`, where
`patchveil serve start` finds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.models.he_models import (
    HEModelCard,
    QueryCipher,
    check_model_name,
    preset,
    save_he_model,
)
from patchveil.models.square_nets import plain_predict, train_square_net

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HETrainingData:
    """Plain arrays for the trainer: images `[N, H, W, C]` in [0, 1] and labels."""

    description: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    pixel_scale: float
    query_cipher: QueryCipher | None = None


def digits_data() -> HETrainingData:
    from patchveil.models.digits import load_uci_digits

    train, test = load_uci_digits()
    return HETrainingData(
        f"UCI digits 8×8 (scikit-learn load_digits), {len(train)} train / {len(test)} test",
        train.images,
        train.labels,
        test.images,
        test.labels,
        pixel_scale=16.0,
    )


def dataset_data(
    config: PlatformConfig, dataset_name: str, dataset_version: int | None = None
) -> HETrainingData:
    """A published ciphertext dataset version: its train split to fit, its validation split to
    measure. The images are ciphertext as stored; the model learns to classify them as they are."""
    from patchveil.datasets.schema import IMAGE, LABEL, images_from_column
    from patchveil.models.ray_train import read_columns
    from patchveil.pipelines.training import resolve_dataset_version

    version = resolve_dataset_version(config, dataset_name, dataset_version)
    splits = {}
    for split in ("train", "validation"):
        table = read_columns(version, [IMAGE, LABEL], split)
        images = np.asarray(images_from_column(table.column(IMAGE)), dtype=np.float64) / 255.0
        splits[split] = (images, table.column(LABEL).to_numpy())
    if len(splits["train"][1]) == 0:
        raise PatchveilError(f"dataset {version.name} v{version.version} has no training images")
    return HETrainingData(
        f"{version.name} v{version.version} ({version.cipher}, block size {version.block_size}), "
        f"{len(splits['train'][1])} train / {len(splits['validation'][1])} validation",
        *splits["train"],
        *splits["validation"],
        pixel_scale=255.0,
        query_cipher=QueryCipher(version.cipher, version.block_size, version.image_size),
    )


def train_he_model(
    config: PlatformConfig,
    preset_name: str,
    name: str | None = None,
    dataset_name: str | None = None,
    dataset_version: int | None = None,
    epochs: int | None = None,
    channels: int | None = None,
    progress: Progress | None = None,
) -> HEModelCard:
    """Train the preset's network and save it under `<home>/he-models/<name>/`."""
    chosen = preset(preset_name)
    name = check_model_name(name or preset_name)
    say = progress or (lambda _line: None)
    if chosen.source == "dataset":
        if not dataset_name:
            raise PatchveilError(
                f"preset {chosen.name!r} trains on a platform dataset: give --dataset NAME "
                "(see `patchveil dataset list`)"
            )
        say(f"reading dataset {dataset_name}" + (f" v{dataset_version}" if dataset_version else ""))
        data = dataset_data(config, dataset_name, dataset_version)
    else:
        if dataset_name:
            raise PatchveilError(f"preset {chosen.name!r} trains on UCI digits; drop --dataset")
        data = digits_data()
    net_config = chosen.config
    if epochs is not None:
        net_config = replace(net_config, epochs=epochs)
    if channels is not None:
        net_config = replace(net_config, channels=channels)
    say(f"training {name} ({chosen.name}) on {data.description}, {net_config.epochs} epochs")
    started = time.perf_counter()
    net = train_square_net(
        name,
        data.train_images,
        data.train_labels,
        net_config,
        progress=lambda epoch, loss: say(f"  epoch {epoch}/{net_config.epochs}: loss {loss:.3f}"),
    )
    seconds = time.perf_counter() - started
    tested = len(data.test_labels)
    accuracy = (
        float(np.mean(plain_predict(net, data.test_images) == data.test_labels)) if tested else 0.0
    )
    card = HEModelCard(
        name=name,
        preset=chosen.name,
        dataset=data.description,
        image_shape=net.layout.image_shape,
        kernel_size=net.layout.kernel_size,
        stride=net.layout.stride,
        pool=net.pool,
        classes=net.classes,
        pixel_scale=data.pixel_scale,
        plain_accuracy=accuracy,
        test_images=tested,
        train_seconds=round(seconds, 3),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        query_cipher=data.query_cipher,
        architecture=chosen.summary,
        extra={"epochs": net_config.epochs, "channels": net_config.channels},
    )
    return save_he_model(config.home, card, net)
