"""The FedKL key-lock layer: affine-free normalisation, then a scale and shift computed from a key.

Platform side by code, tenant side by value: the platform builds models that contain lock layers,
but only a tenant's actor ever puts its key into one (`set_key`) or trains the lock's weights.
The key is a non-persistent buffer, so it is never in a `state_dict`; the lock's parameters are
named by `lock_parameter_names` and every tenant omits exactly those names from the shared update
(`shared_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from patchveil.errors import PatchveilError

LockLayout = Literal["channels", "tokens"]

#: The length of the key vector a lock reads (FedKL uses a short random vector per client).
DEFAULT_KEY_DIM = 64
DEFAULT_HIDDEN = 64


@dataclass(frozen=True)
class KeyLockConfig:
    """How large a lock's key and its hidden layer are."""

    key_dim: int = DEFAULT_KEY_DIM
    hidden: int = DEFAULT_HIDDEN

    def __post_init__(self) -> None:
        if self.key_dim < 1 or self.hidden < 1:
            raise PatchveilError(
                f"a key lock needs a key length and a hidden width of 1 or more, got "
                f"key_dim={self.key_dim}, hidden={self.hidden}"
            )


class KeyLock(nn.Module):
    """normalise(x) · scale(key) + shift(key), with scale and shift from two small MLPs.

    `channels` locks a feature map [B, C, H, W] (after a convolution) with batch statistics and
    no running averages (running averages would be buffers in the shared state); `tokens` locks
    patch tokens [B, N, D] (after a ViT's patch embedding) with a per-token layer norm.
    """

    def __init__(
        self, features: int, layout: LockLayout, config: KeyLockConfig | None = None
    ) -> None:
        super().__init__()
        config = config or KeyLockConfig()
        if layout not in ("channels", "tokens"):
            raise PatchveilError(f"a key lock's layout is 'channels' or 'tokens', not {layout!r}")
        self.layout: LockLayout = layout
        self.features = features
        self.config = config
        self.normalise: nn.Module = (
            nn.BatchNorm2d(features, affine=False, track_running_stats=False)
            if layout == "channels"
            else nn.LayerNorm(features, elementwise_affine=False)
        )
        self.scale_layers = _key_mlp(config, features)
        self.shift_layers = _key_mlp(config, features)
        # Not persistent: a state_dict (an update, a checkpoint) never carries the key.
        self.register_buffer("key", torch.zeros(config.key_dim), persistent=False)

    def set_key(self, key_vector: torch.Tensor) -> None:
        """Put the tenant's key vector into the lock (on the tenant's side only)."""
        key_vector = torch.as_tensor(key_vector, dtype=torch.float32).flatten()
        if key_vector.numel() != self.config.key_dim:
            raise PatchveilError(
                f"this key lock reads a key vector of {self.config.key_dim} values, got "
                f"{key_vector.numel()}; derive it with key_dim={self.config.key_dim}"
            )
        self.key.copy_(key_vector.to(self.key.device))

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale_layers(self.key), self.shift_layers(self.key)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        normalised = self.normalise(features)
        if self.layout == "channels":
            return normalised * scale[None, :, None, None] + shift[None, :, None, None]
        return normalised * scale + shift

    def extra_repr(self) -> str:
        return f"features={self.features}, layout={self.layout}, key_dim={self.config.key_dim}"


def _key_mlp(config: KeyLockConfig, features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(config.key_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, features)
    )


def key_locks(model: nn.Module) -> list[KeyLock]:
    """Every lock layer of a model."""
    return [module for module in model.modules() if isinstance(module, KeyLock)]


def has_key_lock(model: nn.Module) -> bool:
    return bool(key_locks(model))


def lock_parameter_names(model: nn.Module) -> frozenset[str]:
    """The state-dict names of every lock layer's parameters: what no tenant ever shares."""
    prefixes = tuple(
        f"{name}." for name, module in model.named_modules() if isinstance(module, KeyLock)
    )
    return frozenset(name for name in model.state_dict() if name.startswith(prefixes))


def shared_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without its lock layers (detached copies): what an update may hold."""
    private = lock_parameter_names(model)
    return {
        name: value.detach().clone()
        for name, value in model.state_dict().items()
        if name not in private
    }


def lock_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the lock layers' parameters (the tenant keeps these, never sends them)."""
    private = lock_parameter_names(model)
    return {
        name: value.detach().clone()
        for name, value in model.state_dict().items()
        if name in private
    }


def load_shared_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a shared state (the global weights) into a model, keeping its own lock layers.

    Refused when the state holds a lock name (a state that must never have been shared) or when it
    misses or adds a shared name (another architecture).
    """
    private = lock_parameter_names(model)
    leaked = sorted(private & set(state))
    if leaked:
        raise PatchveilError(
            f"a shared state must not hold key-lock parameters, but it holds {_first(leaked)}"
        )
    expected = set(model.state_dict()) - private
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise PatchveilError(
            "the shared state does not fit this model: "
            + (f"missing {_first(missing)}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {_first(unexpected)}" if unexpected else "")
            + "; build the model with the same architecture and lock setting"
        )
    model.load_state_dict(dict(state), strict=False)


def set_model_key(model: nn.Module, key_vector: torch.Tensor) -> None:
    """Put one key vector into every lock layer of the model."""
    locks = key_locks(model)
    if not locks:
        raise PatchveilError("this model has no key lock; build it with key_lock=KeyLockConfig()")
    for lock in locks:
        lock.set_key(key_vector)


def reinitialise_locks(model: nn.Module, generator: torch.Generator) -> None:
    """Fresh random lock weights and a fresh random key (what an attacker without them can do)."""
    for lock in key_locks(model):
        for layer in (*lock.scale_layers, *lock.shift_layers):
            if isinstance(layer, nn.Linear):
                bound = 1.0 / layer.in_features**0.5
                with torch.no_grad():
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
        lock.set_key(torch.rand(lock.config.key_dim, generator=generator) * 2 - 1)


def _first(names: Iterable[str], limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
