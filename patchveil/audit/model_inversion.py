"""Model inversion of the shared model (Nakamura et al.): descent on its input, white- or black-box."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from patchveil.audit.embedding import EmbeddingNet, accuracy
from patchveil.audit.scoring import from_blocks, ssim, to_blocks
from patchveil.errors import PatchveilError
from patchveil.groups import window_of_blocks
from patchveil.models.inference import predict
from patchveil.tenants.keys import CipherSpec

InversionMode = Literal["white_box", "black_box"]
#: A prediction service: uint8 images [N, H, W, 3] → (labels [N], class probabilities [N, C]).
QueryFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
_LOG_FLOOR = 1e-12


class CountingQueries:
    """Wraps a query function and counts every image sent to it (one query per image)."""

    def __init__(self, query_fn: QueryFn) -> None:
        self._query_fn = query_fn
        self.queries = 0

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.queries += len(images)
        return self._query_fn(images)


def model_query_fn(model: nn.Module, device: str | torch.device = "cpu") -> QueryFn:
    """What a recognition server answers: the label and the softmax of `predict`'s logits."""

    def query(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = torch.softmax(predict(model, images, torch.device(device)), dim=-1)
        return probabilities.argmax(dim=-1).numpy(), probabilities.numpy()

    return query


def _targets(target_class: int | Sequence[int]) -> np.ndarray:
    targets = np.atleast_1d(np.asarray(target_class, dtype=np.int64))
    if targets.ndim != 1 or len(targets) == 0 or (targets < 0).any():
        raise PatchveilError(
            f"target_class must be a class index or a list of them, got {target_class!r}"
        )
    return targets


def latent_to_input(latent: torch.Tensor) -> torch.Tensor:
    """The model input in (−1, 1) (pixels 127.5·(x + 1)) of an unbounded latent: tanh keeps
    every pixel inside [0, 255] without clamping away the gradient."""
    return torch.tanh(latent)


def input_to_pixels(inputs: torch.Tensor) -> np.ndarray:
    """Model input [N, 3, H, W] in [−1, 1] → uint8 images [N, H, W, 3]."""
    pixels = inputs.detach().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def image_prior(inputs: torch.Tensor, tv_weight: float, l2_weight: float) -> torch.Tensor:
    """Per-image total variation (mean absolute neighbour difference) and L2 (pull to grey)."""
    vertical = (inputs[:, :, 1:] - inputs[:, :, :-1]).abs().mean(dim=(1, 2, 3))
    horizontal = (inputs[:, :, :, 1:] - inputs[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return tv_weight * (vertical + horizontal) + l2_weight * inputs.pow(2).mean(dim=(1, 2, 3))


def _initial_latent(
    count: int, image_size: int, seed: int, device: str | torch.device
) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(count, 3, image_size, image_size, generator=generator)).to(device)


def invert_white_box(
    model: nn.Module,
    target_class: int | Sequence[int],
    steps: int = 200,
    *,
    image_size: int = 32,
    learning_rate: float = 0.1,
    tv_weight: float = 0.3,
    l2_weight: float = 0.05,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Adam on the input through autograd: minimise −log p(target) + priors; one uint8 image
    [N, H, W, 3] per target class (the model's own weights are left untouched)."""
    targets = torch.from_numpy(_targets(target_class)).to(device)
    model = model.to(device).eval()
    latent = _initial_latent(len(targets), image_size, seed, device).requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=learning_rate)
    for _ in range(steps):
        inputs = latent_to_input(latent)
        loss = nn.functional.cross_entropy(model(inputs), targets, reduction="none")
        loss = (loss + image_prior(inputs, tv_weight, l2_weight)).sum()
        (latent.grad,) = torch.autograd.grad(loss, latent)
        optimizer.step()
    return input_to_pixels(latent_to_input(latent))


@dataclass(frozen=True)
class BlackBoxInversion:
    """The images a query-only attacker reached, what it cost and how far it got."""

    images: np.ndarray
    queries: int
    start_probability: np.ndarray
    final_probability: np.ndarray


def _target_log_probability(
    query_fn: QueryFn, inputs: torch.Tensor, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """log p(target) per image as the service answers it on the uint8 images it receives."""
    _, probabilities = query_fn(input_to_pixels(inputs))
    chosen = probabilities[np.arange(len(targets)), targets]
    return np.log(np.maximum(chosen, _LOG_FLOOR)), chosen


def invert_black_box(
    query_fn: QueryFn,
    target_class: int | Sequence[int],
    steps: int = 100,
    *,
    query_budget: int = 2000,
    image_size: int = 32,
    directions: int = 10,
    sigma: float = 0.2,
    tile: int = 2,
    learning_rate: float = 0.05,
    tv_weight: float = 0.3,
    l2_weight: float = 0.05,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> BlackBoxInversion:
    """Gradient ascent on log p(target) estimated from queries only (NES, antithetic random
    directions drawn at `tile`×`tile`-pixel resolution), plus the attacker's own exact prior
    gradient; at most `query_budget` queries per target class, counted exactly (the first
    and the last evaluation included).

    Every step costs 2·`directions` queries per class; stops at `steps` or when the next step
    would leave no query for the final evaluation.
    """
    targets = _targets(target_class)
    if image_size % tile:
        raise PatchveilError(f"tile {tile} does not divide the image size {image_size}")
    if query_budget < 2:
        raise PatchveilError(
            f"query_budget must allow a first and a last query, got {query_budget}"
        )
    counter = CountingQueries(query_fn)
    count = len(targets)
    generator = torch.Generator().manual_seed(seed + 1)
    latent = _initial_latent(count, image_size, seed, device)
    optimizer = torch.optim.Adam([latent.requires_grad_(True)], lr=learning_rate)
    _, start = _target_log_probability(counter, latent_to_input(latent), targets)
    coarse = image_size // tile
    per_step = 2 * directions
    for _ in range(steps):
        if counter.queries // count + per_step + 1 > query_budget:
            break
        noise = torch.randn(directions, count, 3, coarse, coarse, generator=generator)
        noise = noise.repeat_interleave(tile, -1).repeat_interleave(tile, -2).to(device)
        with torch.no_grad():
            probes = torch.cat([latent + sigma * noise, latent - sigma * noise]).flatten(0, 1)
            values, _ = _target_log_probability(
                counter, latent_to_input(probes), np.tile(targets, per_step)
            )
        values_t = torch.from_numpy(values).to(device).view(2, directions, count)
        slope = (values_t[0] - values_t[1]) / (2 * sigma)  # [directions, count]
        ascent = (slope[..., None, None, None] * noise).mean(dim=0)
        prior = image_prior(latent_to_input(latent), tv_weight, l2_weight).sum()
        (prior_gradient,) = torch.autograd.grad(prior, latent)
        latent.grad = prior_gradient - ascent
        optimizer.step()
    final_inputs = latent_to_input(latent.detach())
    _, final = _target_log_probability(counter, final_inputs, targets)
    return BlackBoxInversion(input_to_pixels(final_inputs), counter.queries, start, final)


def class_means(images: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """The mean plain image of every class, uint8 [classes, H, W, 3] (the class representative
    Nakamura et al. score against)."""
    missing = [c for c in range(classes) if not (labels == c).any()]
    if missing:
        raise PatchveilError(f"no plain images of class(es) {missing} to form a class mean")
    means = [images[labels == c].astype(np.float64).mean(axis=0) for c in range(classes)]
    return np.stack(means).round().clip(0, 255).astype(np.uint8)


def arrange_blocks_like(
    images: np.ndarray, references: np.ndarray, block_size: int, window: int
) -> np.ndarray:
    """Each image's blocks reordered inside their `window`×`window`-block windows to match the
    reference best (least squared error, Hungarian assignment): the block order an exactly
    invariant model leaves to the attacker, chosen in the attacker's favour."""
    grid = to_blocks(images, block_size)
    count, side = grid.shape[:2]
    blocks = grid.reshape(count, side * side, -1).astype(np.float64)
    wanted = to_blocks(references, block_size).reshape(count, side * side, -1).astype(np.float64)
    windows = window_of_blocks(side, window)
    arranged = blocks.copy()
    for image in range(count):
        for number in np.unique(windows):
            positions = np.flatnonzero(windows == number)
            own, goal = blocks[image, positions], wanted[image, positions]
            cost = ((own[:, None] - goal[None]) ** 2).sum(-1)
            source, destination = linear_sum_assignment(cost)
            arranged[image, positions[destination]] = own[source]
    return from_blocks(arranged.reshape(grid.shape).astype(np.uint8))


def arrangement_window(spec: CipherSpec) -> int | None:
    """The window (in blocks) inside which the cipher's model ignores block order: the
    `disposable` cipher's window (the whole image for window 0); None for ciphers whose model
    sees every block's position."""
    if spec.name != "disposable":
        return None
    window = int(spec.param_dict.get("window", 0))
    return window or spec.blocks_per_side


@dataclass(frozen=True)
class ModelInversionResult:
    """How much of each class a model inversion recovers, beside the chance floor and ceiling."""

    cipher: str
    params: dict[str, Any]
    block_size: int
    image_size: int
    mode: str
    queries: int
    steps: int
    classes: int
    target_probability: float
    ssim_to_class_mean: float
    ssim_to_class_mean_arranged: float
    noise_ssim_to_class_mean: float
    noise_ssim_to_class_mean_arranged: float
    recognisability: float
    noise_recognisability: float
    class_mean_recognisability: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def audit_model_inversion(
    model: nn.Module,
    spec: CipherSpec,
    plain_images: np.ndarray,
    plain_labels: np.ndarray,
    classifier: EmbeddingNet,
    *,
    mode: InversionMode = "white_box",
    steps: int = 200,
    query_budget: int = 2000,
    noise_per_class: int = 10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **attack_settings: Any,
) -> tuple[ModelInversionResult, np.ndarray]:
    """Invert `model` (trained on `spec` ciphertexts) once per class and score the images.

    The shared model classifies ciphertexts, so what inversion recovers is a ciphertext-domain
    image: the most "class-like" input under the cipher. For a key-free cipher whose model is
    exactly invariant to it (`disposable` + `window_position`/`position_free`) that is all an
    attacker can get, and the model cannot tell one block order inside a window from another;
    so the inverted image is scored both as it is and after the block arrangement (inside the
    cipher's windows) that best matches the class mean: an upper bound on what an attacker
    who orders the blocks could reach. Scores, with the plain images held only by the auditor:
    SSIM to the class mean of the plain images (Nakamura et al. score against class
    representatives), beside the SSIM of uniform noise (floor); recognisability = accuracy of
    an independent plain-trained classifier on the inverted images (labelled with the target
    class), beside its accuracy on noise (chance floor) and on the class means (ceiling).

    `queries` counts oracle queries for the black-box attack and forward–backward passes
    (steps × classes) for the white-box one. Returns the result and the inverted images.
    """
    image_size = plain_images.shape[1]
    classes = int(plain_labels.max()) + 1
    targets = np.arange(classes)
    means = class_means(plain_images, plain_labels, classes)
    if mode == "white_box":
        inverted = invert_white_box(
            model,
            targets,
            steps,
            image_size=image_size,
            seed=seed,
            device=device,
            **attack_settings,
        )
        queries, probability = steps * classes, _probability_of(model, inverted, targets, device)
    elif mode == "black_box":
        found = invert_black_box(
            model_query_fn(model, device), targets, steps, query_budget=query_budget,
            image_size=image_size, seed=seed, device=device, **attack_settings,
        )  # fmt: skip
        inverted, queries, probability = (
            found.images,
            found.queries,
            float(found.final_probability.mean()),
        )
    else:
        raise PatchveilError(f"unknown inversion mode {mode!r}; choose white_box or black_box")
    noise = np.random.default_rng(seed).integers(
        0, 256, (classes * noise_per_class, image_size, image_size, 3), dtype=np.uint8
    )
    noise_targets = np.repeat(targets, noise_per_class)
    window = arrangement_window(spec)

    def arranged_ssim(candidates: np.ndarray, labels: np.ndarray) -> float:
        if window is not None:
            candidates = arrange_blocks_like(candidates, means[labels], spec.block_size, window)
        return float(ssim(candidates, means[labels]).mean())

    result = ModelInversionResult(
        cipher=spec.name,
        params=spec.param_dict,
        block_size=spec.block_size,
        image_size=image_size,
        mode=mode,
        queries=int(queries),
        steps=steps,
        classes=classes,
        target_probability=probability,
        ssim_to_class_mean=float(ssim(inverted, means[targets]).mean()),
        ssim_to_class_mean_arranged=arranged_ssim(inverted, targets),
        noise_ssim_to_class_mean=float(ssim(noise, means[noise_targets]).mean()),
        noise_ssim_to_class_mean_arranged=arranged_ssim(noise, noise_targets),
        recognisability=accuracy(classifier, inverted, targets, device=device),
        noise_recognisability=accuracy(classifier, noise, noise_targets, device=device),
        class_mean_recognisability=accuracy(classifier, means, targets, device=device),
    )
    return result, inverted


def _probability_of(
    model: nn.Module, images: np.ndarray, targets: np.ndarray, device: str | torch.device
) -> float:
    _, probabilities = model_query_fn(model, device)(images)
    return float(probabilities[np.arange(len(targets)), targets].mean())
