"""The federated models by name: DLG's LeNet, a CIFAR ResNet-18 and the ViT, each with or without a key lock.

The lock sits where FedKL puts it: after the first convolution (LeNet, ResNet-18; in ResNet-18 it
takes the place of the first batch norm, since it normalises itself) and after the ViT's patch
embedding. `NetSpec` names a model completely, so the platform and every tenant build the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from patchveil.errors import PatchveilError
from patchveil.models.key_lock import KeyLock, KeyLockConfig

NetBuilder = Callable[["NetSpec"], nn.Module]
_NETS: dict[str, NetBuilder] = {}


def register_net(name: str) -> Callable[[NetBuilder], NetBuilder]:
    """Decorator: make a federated model buildable by name through `create_net`."""

    def add(builder: NetBuilder) -> NetBuilder:
        if name in _NETS:
            raise ValueError(f"federated model {name!r} is registered twice")
        _NETS[name] = builder
        return builder

    return add


def available_nets() -> list[str]:
    return sorted(_NETS)


@dataclass(frozen=True)
class NetSpec:
    """A federated model: architecture, geometry, width and (optionally) its key lock.

    `width` is the first layer's channel count (LeNet 12, ResNet-18 64 as published; smaller for
    tests); for the ViT it is the embedding width (its depth and heads follow from `vit_depth`).
    `stem_norm` gives an unlocked LeNet an ordinary batch norm where the lock would sit: FedAvg's
    like-for-like baseline, since the lock also normalises (ResNet-18 has one anyway).
    """

    name: str
    num_classes: int = 10
    image_size: int = 32
    width: int | None = None
    key_lock: KeyLockConfig | None = None
    vit_depth: int = 2
    patch_size: int = 4
    stem_norm: bool = False

    def __post_init__(self) -> None:
        if self.name not in _NETS:
            raise PatchveilError(
                f"unknown federated model {self.name!r}; choose one of {', '.join(available_nets())}"
            )
        for field_name in ("num_classes", "image_size", "vit_depth", "patch_size"):
            if int(getattr(self, field_name)) < 1:
                raise PatchveilError(
                    f"{field_name} must be 1 or more, got {getattr(self, field_name)}"
                )
        if self.width is not None and self.width < 1:
            raise PatchveilError(f"width must be 1 or more, got {self.width}")

    @property
    def locked(self) -> bool:
        return self.key_lock is not None


def create_net(spec: NetSpec) -> nn.Module:
    """Build the model a `NetSpec` describes (fresh weights from torch's current generator)."""
    return _NETS[spec.name](spec)


# --- LeNet (the DLG paper's: sigmoid activations, twice differentiable) ----------------------------
class LeNet(nn.Module):
    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        width = spec.width or 12
        self.conv1 = nn.Conv2d(3, width, 5, padding=2, stride=2)
        # The module after the first convolution: the lock, a plain batch norm, or nothing.
        self.key_lock: nn.Module = nn.Identity()
        if spec.key_lock:
            self.key_lock = KeyLock(width, "channels", spec.key_lock)
        elif spec.stem_norm:
            self.key_lock = nn.BatchNorm2d(width, track_running_stats=False)
        self.body = nn.Sequential(
            nn.Sigmoid(),
            nn.Conv2d(width, width, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(width, width, 5, padding=2, stride=1),
            nn.Sigmoid(),
            nn.Flatten(),
        )
        side = (spec.image_size + 3) // 4
        self.fc = nn.Linear(width * side * side, spec.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.key_lock(self.conv1(images))))


@register_net("lenet")
def lenet(spec: NetSpec) -> nn.Module:
    return LeNet(spec)


# --- ResNet-18 for 32×32 inputs (3×3 stem, no max pool) --------------------------------------------
class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(features)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(features))


class ResNet18(nn.Module):
    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        width = spec.width or 64
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        # The lock normalises by itself, so it replaces the stem's batch norm.
        self.key_lock: nn.Module = (
            KeyLock(width, "channels", spec.key_lock) if spec.key_lock else nn.BatchNorm2d(width)
        )
        stages = []
        in_channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            channels = width * 2**stage
            stages += [
                _BasicBlock(in_channels, channels, stride),
                _BasicBlock(channels, channels, 1),
            ]
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, spec.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.key_lock(self.conv1(images)))
        features = self.stages(features)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))


@register_net("resnet18")
def resnet18(spec: NetSpec) -> nn.Module:
    return ResNet18(spec)


# --- the ViT (timm's, as the shared model uses) with the lock after the patch embedding ------------
@register_net("vit")
def vit(spec: NetSpec) -> nn.Module:
    from patchveil.models.vit import create_vit

    width = spec.width or 64
    model = create_vit(
        "standard",
        "test",
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_classes=spec.num_classes,
        embed_dim=width,
        depth=spec.vit_depth,
        num_heads=max(1, width // 32),
    )
    if spec.key_lock:
        attach_vit_lock(model, spec.key_lock)
    return model


def attach_vit_lock(model: nn.Module, config: KeyLockConfig) -> nn.Module:
    """Put a token lock after a timm ViT's patch embedding (in place of its identity norm)."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None or not isinstance(getattr(patch_embed, "norm", None), nn.Identity):
        raise PatchveilError(
            "the key lock attaches to a timm VisionTransformer whose patch embedding has no norm "
            "of its own; this model has none or already normalises its patches"
        )
    patch_embed.norm = KeyLock(model.embed_dim, "tokens", config)
    return model


NET_DEFAULT_WIDTHS = MappingProxyType({"lenet": 12, "resnet18": 64, "vit": 64})
