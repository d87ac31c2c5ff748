"""Gradient leakage: DLG, iDLG, Inverting Gradients and an adaptive attacker against shared updates.

The attacker is the platform: it holds the global model's shared weights and one tenant's shared
update for a single image (batch 1, one local step, so the update is the gradient up to the known
learning rate), and searches for an image whose gradient matches it.

- `dlg` (Zhu et al. 2019): dummy image and dummy soft label, L2 distance of gradients, L-BFGS;
- `idlg` (Zhao et al. 2020): the label read off the last layer's bias gradient (the only negative
  entry of softmax − one-hot), then DLG on the image alone;
- `inverting_gradients` (Geiping et al. 2020): cosine distance of gradients plus total variation,
  Adam on signed gradients, the image boxed to [0, 1], iDLG's label;
- `adaptive_reinitialise`: against a locked model, the attacker puts fresh random lock weights and a
  random key into his copy, then runs Inverting Gradients;
- `adaptive_optimise`: he optimises his copy's lock weights jointly with the image (the lock's
  last layer can produce any per-channel scale and shift, so this searches all of them).

Without a lock every attack uses the exact model; with a lock the non-adaptive attacks use the
model as the platform holds it (its own untrained lock weights, no key: a zero key vector).
Scores: SSIM and PSNR of the reconstruction quantised to uint8 against the plain image, data range
255 (`patchveil.audit.scoring`); `psnr_rmse` is FedKL's published variant, 10·log10(255/RMSE).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from patchveil.audit.scoring import psnr, ssim
from patchveil.errors import PatchveilError
from patchveil.models.key_lock import (
    has_key_lock,
    key_locks,
    lock_parameter_names,
    reinitialise_locks,
)

AttackName = Literal[
    "dlg", "idlg", "inverting_gradients", "adaptive_reinitialise", "adaptive_optimise"
]
ATTACKS: tuple[AttackName, ...] = (
    "dlg",
    "idlg",
    "inverting_gradients",
    "adaptive_reinitialise",
    "adaptive_optimise",
)
ADAPTIVE_ATTACKS: tuple[AttackName, ...] = ("adaptive_reinitialise", "adaptive_optimise")
Gradient = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AttackBudget:
    """How hard each attack tries: L-BFGS iterations (DLG, iDLG) and Adam steps (the rest)."""

    lbfgs_steps: int = 100
    adam_steps: int = 300
    adam_lr: float = 0.05
    total_variation: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class Reconstruction:
    """One attack on one image: the reconstruction (uint8 [H, W, 3]), its scores, its label."""

    attack: str
    image: np.ndarray
    ssim: float
    psnr: float
    psnr_rmse: float
    label_guess: int
    gradient_distance: float


# --- what the tenant shares ------------------------------------------------------------------------
def shared_parameter_names(model: nn.Module) -> list[str]:
    """The parameters whose gradients a tenant shares: all but the lock's."""
    private = lock_parameter_names(model)
    return [name for name, _ in model.named_parameters() if name not in private]


def client_gradient(model: nn.Module, image: torch.Tensor, label: int) -> Gradient:
    """The shared update of one local step on one image [3, H, W] in [0, 1] (train mode)."""
    model.train()
    names = shared_parameter_names(model)
    params = dict(model.named_parameters())
    loss = nn.functional.cross_entropy(model(image[None]), torch.tensor([label]))
    grads = torch.autograd.grad(loss, [params[name] for name in names])
    return {name: grad.detach().clone() for name, grad in zip(names, grads, strict=True)}


def infer_label(gradient: Gradient, model: nn.Module) -> int:
    """iDLG's label: the last layer's bias gradient is softmax − one-hot, negative only at the label."""
    last = _last_linear_name(model)
    bias = gradient.get(f"{last}.bias")
    if bias is not None:
        return int(torch.argmin(bias))
    # Without a bias: with non-negative features, the label's weight row sums negative.
    return int(torch.argmin(gradient[f"{last}.weight"].sum(dim=1)))


def _last_linear_name(model: nn.Module) -> str:
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    locks = {name for name, m in model.named_modules() if m in key_locks(model)}
    linear = [name for name in linear if not any(name.startswith(f"{lock}.") for lock in locks)]
    if not linear:
        raise PatchveilError("gradient attacks need a model that ends in a linear layer")
    return linear[-1]


# --- gradient distances ----------------------------------------------------------------------------
def _dummy_gradient(
    model: nn.Module, names: Sequence[str], images: torch.Tensor, soft_label: torch.Tensor
) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    logits = model(images)
    loss = torch.sum(-soft_label * nn.functional.log_softmax(logits, dim=-1))
    return list(torch.autograd.grad(loss, [params[name] for name in names], create_graph=True))


def l2_distance(dummy: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(((d - t) ** 2).sum() for d, t in zip(dummy, target, strict=True))  # type: ignore[return-value]


def cosine_distance(dummy: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = sum((d * t).sum() for d, t in zip(dummy, target, strict=True))
    dummy_norm = torch.sqrt(sum((d * d).sum() for d in dummy))  # type: ignore[arg-type]
    target_norm = math.sqrt(float(sum((t * t).sum() for t in target)))
    return 1 - dot / (dummy_norm * target_norm + 1e-12)  # type: ignore[operator]


def total_variation(images: torch.Tensor) -> torch.Tensor:
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean()


# --- the attacks -----------------------------------------------------------------------------------
def _lbfgs_match(
    model: nn.Module,
    target: Gradient,
    shape: tuple[int, ...],
    num_classes: int,
    label: int | None,
    budget: AttackBudget,
) -> tuple[torch.Tensor, float]:
    """DLG's loop (iDLG's when `label` is given): L-BFGS on the L2 gradient distance, restarted
    from a fresh dummy when it diverges (as DLG does on some images), the best result kept."""
    best = (torch.zeros(shape), math.inf)
    steps_left = budget.lbfgs_steps
    for restart in range(_LBFGS_RESTARTS):
        image, distance, steps_used, diverged = _lbfgs_once(
            model,
            target,
            shape,
            num_classes,
            label,
            steps_left,
            budget.seed * _LBFGS_RESTARTS + restart,
        )
        if distance < best[1]:
            best = (image, distance)
        steps_left -= steps_used
        if not diverged or steps_left <= 0:
            break
    return best


_LBFGS_RESTARTS = 4
# An L2 gradient distance this small already reconstructs the image (SSIM > 0.99 on LeNet).
_CONVERGED = 1e-6


def _lbfgs_once(
    model: nn.Module,
    target: Gradient,
    shape: tuple[int, ...],
    num_classes: int,
    label: int | None,
    steps: int,
    seed: int,
) -> tuple[torch.Tensor, float, int, bool]:
    generator = torch.Generator().manual_seed(seed)
    names = list(target)
    wanted = [target[name] for name in names]
    # A start inside the image box: DLG's Gaussian start left L-BFGS stuck on CIFAR images.
    dummy = torch.rand((1, *shape), generator=generator).requires_grad_(True)
    variables = [dummy]
    if label is None:
        label_logits = torch.randn((1, num_classes), generator=generator).requires_grad_(True)
        variables.append(label_logits)
    optimiser = torch.optim.LBFGS(variables, lr=1, max_iter=20, history_size=100)
    best = (dummy.detach().clone()[0], math.inf)

    def soft_label() -> torch.Tensor:
        if label is None:
            return torch.softmax(label_logits, dim=-1)
        return nn.functional.one_hot(torch.tensor([label]), num_classes).float()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        distance = l2_distance(_dummy_gradient(model, names, dummy, soft_label()), wanted)
        grads = torch.autograd.grad(distance, variables)
        for variable, grad in zip(variables, grads, strict=True):
            variable.grad = grad
        return distance.detach()

    for step in range(1, steps + 1):
        distance = float(optimiser.step(closure))
        current = dummy.detach()
        if not math.isfinite(distance) or not bool(torch.isfinite(current).all()):
            return best[0], best[1], step, True
        if distance < best[1]:
            best = (current.clone()[0], distance)
        if distance < _CONVERGED:
            break
    return best[0], best[1], step, False


def _adam_match(
    model: nn.Module,
    target: Gradient,
    shape: tuple[int, ...],
    num_classes: int,
    label: int,
    budget: AttackBudget,
    extra_variables: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, float]:
    """Inverting Gradients' loop: cosine distance + TV, Adam on signed gradients, boxed image."""
    generator = torch.Generator().manual_seed(budget.seed)
    names = list(target)
    wanted = [target[name] for name in names]
    dummy = torch.rand((1, *shape), generator=generator).requires_grad_(True)
    variables = [dummy, *extra_variables]
    optimiser = torch.optim.Adam(variables, lr=budget.adam_lr)
    steps = budget.adam_steps
    milestones = [int(steps * fraction) for fraction in (3 / 8, 5 / 8, 7 / 8)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=0.1)
    one_hot = nn.functional.one_hot(torch.tensor([label]), num_classes).float()
    best = (dummy.detach().clone(), math.inf)
    for _ in range(steps):
        optimiser.zero_grad()
        distance = cosine_distance(_dummy_gradient(model, names, dummy, one_hot), wanted)
        objective = distance + budget.total_variation * total_variation(dummy)
        grads = torch.autograd.grad(objective, variables)
        dummy.grad = grads[0].sign()  # Geiping et al.: signed gradients for the image
        for variable, grad in zip(extra_variables, grads[1:], strict=True):
            variable.grad = grad
        optimiser.step()
        scheduler.step()
        with torch.no_grad():
            dummy.clamp_(0, 1)
        if float(distance.detach()) < best[1]:
            best = (dummy.detach().clone(), float(distance.detach()))
    return best[0][0], best[1]


def attacker_model(global_model: nn.Module, attack: AttackName, seed: int = 0) -> nn.Module:
    """The attacker's copy of the global model, with the lock as this attack treats it."""
    model = copy.deepcopy(global_model)
    model.train()
    for module in model.modules():
        if getattr(module, "fused_attn", False):
            # Fused attention has no second derivative on CPU; gradient matching needs one.
            module.fused_attn = False
    if attack in ADAPTIVE_ATTACKS and has_key_lock(model):
        reinitialise_locks(model, torch.Generator().manual_seed(10_000 + seed))
    return model


def run_attack(
    attack: AttackName,
    global_model: nn.Module,
    target: Gradient,
    plain: np.ndarray,
    num_classes: int,
    budget: AttackBudget | None = None,
) -> Reconstruction:
    """Run one attack on one tenant's shared gradient and score it against the plain image
    (uint8 [H, W, 3], used only to score)."""
    if attack not in ATTACKS:
        raise PatchveilError(
            f"unknown gradient attack {attack!r}; choose one of {', '.join(ATTACKS)}"
        )
    budget = budget or AttackBudget()
    model = attacker_model(global_model, attack, budget.seed)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    shape = (plain.shape[2], plain.shape[0], plain.shape[1])
    label = infer_label(target, model)
    extra: list[torch.Tensor] = []
    if attack == "adaptive_optimise":
        extra = [p for lock in key_locks(model) for p in lock.parameters()]
    if attack == "dlg":
        image, distance = _lbfgs_match(model, target, shape, num_classes, None, budget)
    elif attack == "idlg":
        image, distance = _lbfgs_match(model, target, shape, num_classes, label, budget)
    else:
        image, distance = _adam_match(model, target, shape, num_classes, label, budget, extra)
    return score(attack, image, plain, label, distance)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] (clipped) → uint8 [H, W, 3]."""
    array = image.detach().clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(array * 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float [3, H, W] in [0, 1] (the models' input)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


def score(
    attack: str, image: torch.Tensor, plain: np.ndarray, label: int, distance: float
) -> Reconstruction:
    reconstruction = to_uint8(image)
    error = float(((reconstruction.astype(np.float64) - plain.astype(np.float64)) ** 2).mean())
    rmse_psnr = 10 * math.log10(255.0 / math.sqrt(error)) if error > 0 else 100.0
    return Reconstruction(
        attack=attack,
        image=reconstruction,
        ssim=float(ssim(reconstruction[None], plain[None])[0]),
        psnr=float(psnr(reconstruction[None], plain[None])[0]),
        psnr_rmse=min(rmse_psnr, 100.0),
        label_guess=label,
        gradient_distance=distance,
    )
