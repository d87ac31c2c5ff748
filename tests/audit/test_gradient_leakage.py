"""Gradient leakage: the attacks invert an unlocked update, and fail against the key lock."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from patchveil.audit.gradient_leakage import (
    ATTACKS,
    AttackBudget,
    client_gradient,
    infer_label,
    run_attack,
    shared_parameter_names,
    to_tensor,
)
from patchveil.errors import PatchveilError
from patchveil.models.key_lock import KeyLockConfig, lock_parameter_names, set_model_key
from patchveil.models.small_nets import NetSpec, create_net

SIZE = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """One torch thread: on a shared machine, thread contention slows double backprop tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _smooth_image(seed: int) -> np.ndarray:
    """A smooth 16×16 picture (gradients of colour), like a downscaled photograph."""
    generator = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIZE)
    image = np.stack(
        [
            np.add.outer(ramp * generator.uniform(-1, 1), ramp * generator.uniform(-1, 1))
            for _ in "rgb"
        ],
        axis=-1,
    )
    image = (image - image.min()) / (np.ptp(image) + 1e-9)
    return np.round(image * 255).astype(np.uint8)


def _lenet(lock: KeyLockConfig | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_net(NetSpec("lenet", image_size=SIZE, width=12, key_lock=lock))
    for parameter in model.parameters():  # the DLG paper's initialisation
        torch.nn.init.uniform_(parameter, -0.5, 0.5)
    return model


def test_idlg_reads_the_label_and_inverts_an_unlocked_update() -> None:
    plain = _smooth_image(1)
    model = _lenet(None)
    gradient = client_gradient(model, to_tensor(plain), label=3)
    assert infer_label(gradient, model) == 3
    result = run_attack("idlg", model, gradient, plain, 10, AttackBudget(lbfgs_steps=15))
    assert result.ssim > 0.8 and result.psnr > 20


def test_the_lock_defeats_idlg_and_stays_out_of_the_update() -> None:
    plain = _smooth_image(1)
    lock = KeyLockConfig(key_dim=8, hidden=8)
    global_model = _lenet(lock)
    client = copy.deepcopy(global_model)
    set_model_key(client, torch.linspace(-1, 1, 8))
    gradient = client_gradient(client, to_tensor(plain), label=3)
    assert not set(gradient) & lock_parameter_names(client)
    assert set(gradient) == set(shared_parameter_names(client))
    result = run_attack("idlg", global_model, gradient, plain, 10, AttackBudget(lbfgs_steps=10))
    assert result.ssim < 0.5


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_runs_and_scores_against_a_locked_model(attack: str) -> None:
    plain = _smooth_image(2)
    lock = KeyLockConfig(key_dim=8, hidden=8)
    global_model = _lenet(lock)
    client = copy.deepcopy(global_model)
    set_model_key(client, torch.linspace(-1, 1, 8))
    gradient = client_gradient(client, to_tensor(plain), label=1)
    budget = AttackBudget(lbfgs_steps=2, adam_steps=5)
    result = run_attack(attack, global_model, gradient, plain, 10, budget)  # type: ignore[arg-type]
    assert result.image.shape == plain.shape and result.image.dtype == np.uint8
    assert -1 <= result.ssim <= 1 and np.isfinite(result.psnr)
    assert result.psnr_rmse == pytest.approx(result.psnr / 2, abs=0.2)


def test_an_unknown_attack_is_refused() -> None:
    with pytest.raises(PatchveilError, match="unknown gradient attack"):
        run_attack("magic", _lenet(None), {}, _smooth_image(0), 10)  # type: ignore[arg-type]


def test_gradient_matching_runs_through_a_vit_with_a_lock() -> None:
    """Second derivatives through attention (fused attention has none on CPU)."""
    plain = _smooth_image(3)
    torch.manual_seed(0)
    spec = NetSpec("vit", image_size=SIZE, width=32, vit_depth=1, key_lock=KeyLockConfig(8, 8))
    model = create_net(spec)
    gradient = client_gradient(model, to_tensor(plain), label=2)
    result = run_attack("adaptive_optimise", model, gradient, plain, 10, AttackBudget(adam_steps=2))
    assert np.isfinite(result.ssim)
