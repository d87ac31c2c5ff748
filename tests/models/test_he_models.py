"""Servable HE models: presets, the folder under the home, training into it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patchveil.config import PlatformConfig
from patchveil.models.he_models import (
    CARD_FILE,
    WEIGHTS_FILE,
    HEModelError,
    check_model_name,
    list_he_models,
    load_he_model,
    model_folder,
    preset,
)
from patchveil.models.square_nets import plain_predict
from patchveil.pipelines.he_training import train_he_model
from tests.models.encrypted_dataset import CIPHER, publish_tiny_dataset
from tests.serve.he_fixtures import save_tiny_he_model


def test_a_saved_model_loads_back_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    card = save_tiny_he_model(tmp_path, "tiny")
    assert list_he_models(tmp_path) == ["tiny"]
    loaded = load_he_model(tmp_path, "tiny")
    assert loaded.card == card and card.weights_sha256
    images = np.random.default_rng(0).random((4, 4, 4, 1))
    assert plain_predict(loaded.net, images).shape == (4,)
    weights = model_folder(tmp_path, "tiny") / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(HEModelError, match="checksum"):
        load_he_model(tmp_path, "tiny")
    with pytest.raises(HEModelError, match="trained ones: tiny"):
        load_he_model(tmp_path, "other")
    for bad in ("../up", "Upper", "", "a/b"):
        with pytest.raises(HEModelError, match="not valid"):
            check_model_name(bad)
    with pytest.raises(HEModelError, match="choose one of bag-of-patches, digits"):
        preset("resnet")


def test_digits_train_into_the_home(tmp_path: Path) -> None:
    lines: list[str] = []
    card = train_he_model(PlatformConfig(home=tmp_path), "digits", epochs=2, progress=lines.append)
    assert card.image_shape == (8, 8, 1) and card.classes == 10 and card.test_images == 360
    assert card.plain_accuracy > 0.5  # two epochs; the bench's 60 reach 98.6%
    assert any("epoch 2/2" in line for line in lines)
    saved = json.loads((model_folder(tmp_path, "digits") / CARD_FILE).read_text())
    assert saved["preset"] == "digits" and saved["query_cipher"] is None


def test_bag_of_patches_trains_on_a_published_ciphertext_dataset(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    publish_tiny_dataset(config.dataset_root, train_per_tenant=40, validation_per_tenant=8)
    with pytest.raises(Exception, match="give --dataset"):
        train_he_model(config, "bag-of-patches")
    card = train_he_model(
        config, "bag-of-patches", name="patches", dataset_name="tiny", epochs=1, channels=2
    )
    assert card.test_images == 16 and card.pool == "mean"
    assert card.query_cipher is not None and card.query_cipher.cipher == CIPHER
    assert load_he_model(tmp_path, "patches").net.layout.image_shape == (32, 32, 3)
