"""Model inversion: white-box reaches the target class, black-box climbs within a counted budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from patchveil.audit.embedding import train_embedding_net
from patchveil.audit.inversion import victim_encrypt
from patchveil.audit.model_inversion import (
    CountingQueries,
    arrange_blocks_like,
    arrangement_window,
    audit_model_inversion,
    invert_black_box,
    invert_white_box,
    model_query_fn,
)
from patchveil.models.vit import create_vit
from patchveil.tenants.keys import CipherSpec

SIZE, BLOCK = 8, 4


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def red_and_blue(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy reddish (class 0) and bluish (class 1) images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.integers(0, 90, (count, SIZE, SIZE, 3))
    images[labels == 0, ..., 0] += 160
    images[labels == 1, ..., 2] += 160
    return images.astype(np.uint8), labels


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_vit("standard", "test", image_size=SIZE, patch_size=BLOCK, num_classes=2)
    images, labels = red_and_blue(64)
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    targets = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def target_probability(model: torch.nn.Module, images: np.ndarray, target: int) -> np.ndarray:
    _, probabilities = model_query_fn(model)(images)
    return probabilities[:, target]


def test_white_box_inversion_reaches_the_target_class(tiny_model: torch.nn.Module) -> None:
    weights = {name: value.clone() for name, value in tiny_model.state_dict().items()}
    for target in (0, 1):
        image = invert_white_box(tiny_model, target, steps=60, image_size=SIZE)
        assert image.shape == (1, SIZE, SIZE, 3) and image.dtype == np.uint8
        assert target_probability(tiny_model, image, target)[0] > 0.9
    # The model's weights are not touched, nor are gradients left on them.
    assert all(torch.equal(weights[name], value) for name, value in tiny_model.state_dict().items())
    assert all(parameter.grad is None for parameter in tiny_model.parameters())


def test_black_box_moves_the_target_probability_up(tiny_model: torch.nn.Module) -> None:
    query = model_query_fn(tiny_model)
    # The grey start already looks red to this model; blue (class 1) starts far below 0.5.
    found = invert_black_box(query, 1, steps=40, query_budget=400, image_size=SIZE)
    assert found.start_probability[0] < 0.5
    assert found.final_probability[0] > found.start_probability[0] + 0.3
    # The reported probability is the service's answer on the returned uint8 image.
    answer = target_probability(tiny_model, found.images, 1)[0]
    assert found.final_probability[0] == pytest.approx(answer, abs=1e-5)


def test_black_box_counts_every_query_and_keeps_the_budget(tiny_model: torch.nn.Module) -> None:
    counter = CountingQueries(model_query_fn(tiny_model))
    found = invert_black_box(
        counter, [0, 1, 0], steps=100, query_budget=105, directions=5, image_size=SIZE
    )
    # First evaluation, then 10 queries per step per class while 10 + 1 more still fit, then
    # the last evaluation: 1 + 10·10 + 1 = 102 per class.
    assert found.queries == counter.queries == 3 * 102
    capped = invert_black_box(
        counter, 1, steps=3, query_budget=10_000, directions=4, image_size=SIZE
    )
    assert capped.queries == 1 + 3 * 8 + 1


def test_arrangement_restores_a_block_order_inside_windows() -> None:
    images, _ = red_and_blue(2)
    images = np.ascontiguousarray(np.repeat(np.repeat(images, 2, 1), 2, 2))  # 16 px: 4×4 blocks
    spec = CipherSpec("disposable", BLOCK, 16, (("group", "none"), ("window", 2)))
    assert arrangement_window(spec) == 2
    assert arrangement_window(CipherSpec("plain", BLOCK, 16)) is None
    scrambled = victim_encrypt(spec, images)
    assert np.array_equal(arrange_blocks_like(scrambled, images, BLOCK, 2), images)


def test_audit_scores_are_json_serialisable(tiny_model: torch.nn.Module) -> None:
    images, labels = red_and_blue(64, seed=1)
    classifier = train_embedding_net(images, labels, epochs=2, batch_size=32).model
    spec = CipherSpec("plain", BLOCK, SIZE)
    for mode in ("white_box", "black_box"):
        result, inverted = audit_model_inversion(
            tiny_model, spec, images, labels, classifier, mode=mode, steps=10, query_budget=50,
            noise_per_class=3,
        )  # fmt: skip
        assert inverted.shape == (2, SIZE, SIZE, 3)
        row = json.loads(json.dumps(result.to_json()))
        assert row["mode"] == mode and row["classes"] == 2
        # Black box: 20 queries per step per class, two steps fit in 50 with the first and last.
        assert row["queries"] == (2 * 10 if mode == "white_box" else 2 * (1 + 2 * 20 + 1))
        for name in ("ssim_to_class_mean", "recognisability", "noise_recognisability"):
            assert np.isfinite(row[name])
        assert row["class_mean_recognisability"] == 1.0
