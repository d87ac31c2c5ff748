"""Mutual information between paired samples (plain, cipher embeddings): MINE, InfoNCE, SMILE.

Each estimator trains a small critic T(x, y) on paired samples and reports a variational lower
bound on I(X; Y), in nats, on held-out pairs (training pairs would flatter a critic that has
memorised them). Every row of a batch is a joint sample; every other (x_i, y_j), i ≠ j, is a
sample of the product of marginals.

- **MINE** (Belghazi et al. 2018): the Donsker–Varadhan bound E_P[T] − log E_Q[e^T]; its
  gradient's denominator E_Q[e^T] is replaced by an exponential moving average, which removes
  the minibatch bias of the gradient.
- **InfoNCE** (van den Oord et al. 2018): E[T(x_i, y_i) − log mean_j e^{T(x_i, y_j)}]; it can
  never exceed log(batch size), so it saturates where MI is large.
- **SMILE** (Song & Ermon 2020): the critic is trained with the Jensen–Shannon (f-GAN) bound and
  the estimate is the DV bound with e^T clipped to [e^−τ, e^τ] (τ = 5), trading a little bias
  for far less variance than MINE.

A confidence interval comes from repeating the whole estimate over seeds (critic initialisation
and batch order); `shuffled_null` breaks the pairing (true MI 0) and `calibrate` checks the
estimators on correlated Gaussians whose MI is known in closed form.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import t as student_t
from torch import nn

from patchveil.errors import PatchveilError

Estimator = Literal["mine", "infonce", "smile"]
ESTIMATORS: tuple[Estimator, ...] = ("mine", "infonce", "smile")
CriticKind = Literal["separable", "concat"]
SMILE_CLIP = 5.0


class SeparableCritic(nn.Module):
    """T(x, y) = g(x) · h(y): all B×B pair scores of a batch from one matrix product."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256, features: int = 64) -> None:
        super().__init__()
        self.g = _mlp(x_dim, hidden, features)
        self.h = _mlp(y_dim, hidden, features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scores [B, B]: entry (i, j) is T(x_i, y_j)."""
        return self.g(x) @ self.h(y).T


class ConcatCritic(nn.Module):
    """T(x, y) = f([x, y]): more expressive, B² forward passes per batch."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.f = _mlp(x_dim + y_dim, hidden, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scores [B, B]: entry (i, j) is T(x_i, y_j)."""
        count = len(x)
        pairs = torch.cat(
            [x[:, None].expand(count, count, -1), y[None].expand(count, count, -1)], dim=2
        )
        return self.f(pairs).squeeze(-1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, outputs),
    )  # fmt: skip


def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    count = scores.shape[0]
    return scores.masked_select(~torch.eye(count, dtype=torch.bool, device=scores.device))


def _log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(values, dim=0) - math.log(values.numel())


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    """Donsker–Varadhan: mean of the diagonal − log mean exp of the off-diagonal scores."""
    return scores.diagonal().mean() - _log_mean_exp(_off_diagonal(scores))


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: mean over rows of (diagonal − logsumexp of the row) + log B; at most log B."""
    count = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(count)


def smile_bound(scores: torch.Tensor, clip: float = SMILE_CLIP) -> torch.Tensor:
    """SMILE: the DV bound with the partition term's scores clipped to [−clip, clip]."""
    clipped = scores.clamp(-clip, clip)
    return scores.diagonal().mean() - _log_mean_exp(_off_diagonal(clipped))


def js_objective(scores: torch.Tensor) -> torch.Tensor:
    """The Jensen–Shannon (f-GAN) objective SMILE trains its critic with (to maximise)."""
    joint = -nn.functional.softplus(-scores.diagonal()).mean()
    marginal = nn.functional.softplus(_off_diagonal(scores)).mean()
    return joint - marginal


BOUNDS = {"mine": dv_bound, "infonce": infonce_bound, "smile": smile_bound}


class _MineObjective:
    """The DV bound with MINE's moving-average correction of its gradient (a surrogate)."""

    def __init__(self, rate: float = 0.01) -> None:
        self.rate = rate
        self.log_average: torch.Tensor | None = None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        joint = scores.diagonal().mean()
        log_partition = _log_mean_exp(_off_diagonal(scores))
        current = log_partition.detach()
        if self.log_average is None:
            self.log_average = current
        else:
            self.log_average = torch.logaddexp(
                self.log_average + math.log(1 - self.rate), current + math.log(self.rate)
            )
        # d/dθ of exp(log Z − log Z̄) is ∇Z / Z̄: the gradient of log Z with the minibatch
        # partition in the denominator replaced by its moving average Z̄.
        return joint - torch.exp(log_partition - self.log_average)


@dataclass(frozen=True)
class MIEstimate:
    """One estimator's MI (nats) on held-out pairs: mean and 95% t-interval over seeds."""

    estimator: str
    mean: float
    ci_low: float
    ci_high: float
    per_seed: tuple[float, ...]
    critic: str
    steps: int
    batch_size: int
    train_pairs: int
    eval_pairs: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_seed"] = list(self.per_seed)
        return data


def confidence_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): a two-sided 95% Student-t interval of the mean of `values`."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, mean, mean
    freedom = len(array) - 1
    quantile = float(student_t.ppf(0.975, freedom))  # two-sided 95%
    half = quantile * float(array.std(ddof=1)) / math.sqrt(len(array))
    return mean, mean - half, mean + half


def _standardise(train: np.ndarray, evaluate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0, keepdims=True)
    scale = train.std(0, keepdims=True) + 1e-6
    return (train - mean) / scale, (evaluate - mean) / scale


def _check_pairs(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise PatchveilError(
            f"{name}: expected paired samples x [N, Dx] and y [N, Dy], got {x.shape} and {y.shape}"
        )


def estimate_once(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    estimator: Estimator,
    seed: int = 0,
    steps: int = 500,
    batch_size: int = 128,
    critic: CriticKind = "separable",
    learning_rate: float = 5e-4,
    check_every: int = 25,
    device: str | torch.device = "cpu",
) -> float:
    """Train one critic on the training pairs; the bound (nats) on the held-out pairs."""
    _check_pairs(x_train, y_train, "training pairs")
    _check_pairs(x_eval, y_eval, "evaluation pairs")
    if estimator not in BOUNDS:
        raise PatchveilError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    if len(x_eval) < batch_size or len(x_train) < batch_size:
        raise PatchveilError(
            f"need at least batch_size={batch_size} training and evaluation pairs, got "
            f"{len(x_train)} and {len(x_eval)}"
        )
    x_train, x_eval = _standardise(x_train, x_eval)
    y_train, y_eval = _standardise(y_train, y_eval)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    # Early stopping on a validation slice of the training pairs: a critic trained to
    # convergence on a few thousand pairs memorises them and its held-out bound falls below 0.
    split = np.random.default_rng(seed).permutation(len(x_train))
    validation_count = max(batch_size, len(x_train) // 5)
    validation, fit = split[:validation_count], split[validation_count:]
    if len(fit) < batch_size:
        raise PatchveilError(
            f"need at least {batch_size + validation_count} training pairs, got {len(x_train)}"
        )
    build = SeparableCritic if critic == "separable" else ConcatCritic
    model = build(x_train.shape[1], y_train.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    xs = torch.as_tensor(x_train[fit], dtype=torch.float32)
    ys = torch.as_tensor(y_train[fit], dtype=torch.float32)
    objective = {"mine": _MineObjective(), "infonce": infonce_bound, "smile": js_objective}[
        estimator
    ]
    best_bound, best_state = -math.inf, copy.deepcopy(model.state_dict())
    for step in range(1, steps + 1):
        model.train()
        index = torch.randperm(len(xs), generator=generator)[:batch_size]
        scores = model(xs[index].to(device), ys[index].to(device))
        loss = -objective(scores)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % check_every == 0 or step == steps:
            bound = _evaluate(
                model, x_train[validation], y_train[validation], estimator, batch_size, seed, device
            )
            if bound > best_bound:
                best_bound, best_state = bound, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return _evaluate(model, x_eval, y_eval, estimator, batch_size, seed, device)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    estimator: Estimator,
    batch_size: int,
    seed: int,
    device: str | torch.device,
) -> float:
    """The bound averaged over disjoint held-out batches (the same batch size as training)."""
    model.eval()
    bound = BOUNDS[estimator]
    order = np.random.default_rng(seed).permutation(len(x_eval))
    values = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        x = torch.as_tensor(x_eval[index], dtype=torch.float32, device=device)
        y = torch.as_tensor(y_eval[index], dtype=torch.float32, device=device)
        values.append(float(bound(model(x, y))))
    return float(np.mean(values))


def estimate_mi(
    x: np.ndarray,
    y: np.ndarray,
    estimator: Estimator,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 500,
    batch_size: int = 128,
    critic: CriticKind = "separable",
    eval_fraction: float = 0.3,
    device: str | torch.device = "cpu",
) -> MIEstimate:
    """MI (nats) between paired rows of x and y: held-out bound, mean and CI over seeds.

    The same held-out split serves every seed, so the interval reflects the critic's training
    (initialisation, batch order), the spread an auditor rerunning the estimate would see.
    """
    _check_pairs(x, y, "pairs")
    eval_count = max(batch_size, round(len(x) * eval_fraction))
    order = np.random.default_rng(12345).permutation(len(x))
    held_out, train = order[:eval_count], order[eval_count:]
    values = [
        estimate_once(
            x[train],
            y[train],
            x[held_out],
            y[held_out],
            estimator,
            seed,
            steps,
            batch_size,
            critic,
            device=device,
        )
        for seed in seeds
    ]
    mean, low, high = confidence_interval(values)
    return MIEstimate(
        estimator, mean, low, high, tuple(values), critic, steps, batch_size, len(train),
        len(held_out),
    )  # fmt: skip


def shuffled_null(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same samples with the pairing broken by a random permutation of y (true MI: 0)."""
    _check_pairs(x, y, "pairs")
    return x, y[np.random.default_rng(seed).permutation(len(y))]


def gaussian_mi(dim: int, rho: float) -> float:
    """I(X; Y) in nats of d independent coordinate pairs with correlation ρ: −d/2·log(1−ρ²)."""
    if not -1 < rho < 1 or dim < 1:
        raise PatchveilError(f"need dim ≥ 1 and |rho| < 1, got dim={dim}, rho={rho}")
    return -0.5 * dim * math.log(1 - rho * rho)


def rho_for_mi(dim: int, mi: float) -> float:
    """The correlation that gives `dim` coordinate pairs a total MI of `mi` nats."""
    return math.sqrt(1 - math.exp(-2 * mi / dim))


def correlated_gaussians(
    count: int, dim: int, rho: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, I_d), y = ρx + √(1−ρ²)·ε: paired samples of known MI (`gaussian_mi`)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, dim))
    y = rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal((count, dim))
    return x.astype(np.float32), y.astype(np.float32)


@dataclass(frozen=True)
class CalibrationResult:
    """An estimator on Gaussians of known MI: the truth, the estimate, and whether it passed."""

    dim: int
    rho: float
    true_mi: float
    estimate: MIEstimate
    tolerance_below: float
    tolerance_above: float

    @property
    def passed(self) -> bool:
        low = self.true_mi - self.tolerance_below
        high = self.true_mi + self.tolerance_above
        return low <= self.estimate.mean <= high

    def to_json(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "rho": self.rho,
            "true_mi": self.true_mi,
            "estimate": self.estimate.to_json(),
            "tolerance_below": self.tolerance_below,
            "tolerance_above": self.tolerance_above,
            "passed": self.passed,
        }


def calibrate(
    estimator: Estimator,
    dim: int,
    rho: float,
    count: int = 4000,
    seeds: Sequence[int] = (0,),
    steps: int = 400,
    batch_size: int = 128,
    critic: CriticKind = "separable",
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Estimate MI of correlated Gaussians and compare with the closed form.

    Tolerance: these are lower bounds, so an estimate may exceed the truth only by held-out
    sampling noise — 0.15 nats (DV/SMILE's log-partition term over ~1,000 held-out pairs
    fluctuates by about that at 1–2 nats). Below the truth is the critic's approximation gap at a
    small training budget plus, for InfoNCE, its log(B) ceiling: we allow 25% of the true MI plus
    0.1 nats (InfoNCE's bias at MI ≪ log B is well inside that), against log(B) if lower.
    """
    true_mi = gaussian_mi(dim, rho)
    x, y = correlated_gaussians(count, dim, rho, seed=1000 + dim)
    estimate = estimate_mi(x, y, estimator, seeds, steps, batch_size, critic, device=device)
    reachable = min(true_mi, math.log(batch_size)) if estimator == "infonce" else true_mi
    below = true_mi - reachable + 0.25 * reachable + 0.1
    return CalibrationResult(dim, rho, true_mi, estimate, below, 0.15)


@dataclass(frozen=True)
class LeakageResult:
    """MI between plain and cipher embeddings by every estimator, beside the shuffled null."""

    label: str
    estimates: dict[str, MIEstimate]
    null: dict[str, MIEstimate]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            **{name: estimate.to_json() for name, estimate in self.estimates.items()},
            "null": {name: estimate.to_json() for name, estimate in self.null.items()},
        }


def measure_leakage(
    plain_embedding: np.ndarray,
    cipher_embedding: np.ndarray,
    label: str = "",
    estimators: Sequence[Estimator] = ESTIMATORS,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 500,
    batch_size: int = 128,
    critic: CriticKind = "separable",
    with_null: bool = True,
    device: str | torch.device = "cpu",
) -> LeakageResult:
    """Every estimator on (plain, cipher) embedding pairs, and on the shuffled pairs."""

    def run(x: np.ndarray, y: np.ndarray) -> dict[str, MIEstimate]:
        return {
            name: estimate_mi(x, y, name, seeds, steps, batch_size, critic, device=device)
            for name in estimators
        }

    estimates = run(plain_embedding, cipher_embedding)
    null = run(*shuffled_null(plain_embedding, cipher_embedding)) if with_null else {}
    return LeakageResult(label, estimates, null)
