"""Vision Transformer variants, registered by name and built by one factory on timm's ViT."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from patchveil.errors import PatchveilError
from patchveil.groups import parse_group, window_of_blocks
from patchveil.models.invariant_embed import (
    INVARIANCE_GROUPS,
    ORBIT_POOLS,
    OrbitPatchEmbed,
    SetPatchEmbed,
)


@dataclass(frozen=True)
class ViTDims:
    """The width and depth of a ViT: everything that does not depend on the data."""

    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: float


# `tiny`/`small`/`base` are timm's vit_{tiny,small,base}_patch16_224 dimensions; `cpu` trains in
# minutes on 32×32 images with patch 4; `test` is for unit tests only.
VIT_SIZES: Mapping[str, ViTDims] = MappingProxyType(
    {
        "test": ViTDims(depth=2, embed_dim=64, num_heads=2, mlp_ratio=2.0),
        "cpu": ViTDims(depth=6, embed_dim=192, num_heads=3, mlp_ratio=2.0),
        "tiny": ViTDims(depth=12, embed_dim=192, num_heads=3, mlp_ratio=4.0),
        "small": ViTDims(depth=12, embed_dim=384, num_heads=6, mlp_ratio=4.0),
        "base": ViTDims(depth=12, embed_dim=768, num_heads=12, mlp_ratio=4.0),
    }
)

VariantBuilder = Callable[["ModelSpec"], VisionTransformer]
VariantCheck = Callable[["ModelSpec"], None]
VariantValue = int | str


@dataclass(frozen=True)
class VariantParam:
    """A parameter of one model variant: its type, its default (None: unset unless given) and
    whether a spec must give it."""

    kind: type[int] | type[str]
    default: VariantValue | None = None
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class _Variant:
    build: VariantBuilder
    params: Mapping[str, VariantParam]
    check: VariantCheck | None


_VARIANTS: dict[str, _Variant] = {}


def register_variant(
    name: str,
    params: Mapping[str, VariantParam] | None = None,
    check: VariantCheck | None = None,
) -> Callable[[VariantBuilder], VariantBuilder]:
    """Decorator: make a model variant buildable by name through `create_vit`, with its own
    parameters (and their defaults) and an optional check of a spec's geometry against them."""

    def add(builder: VariantBuilder) -> VariantBuilder:
        if name in _VARIANTS:
            raise ValueError(f"model variant {name!r} is registered twice")
        _VARIANTS[name] = _Variant(builder, MappingProxyType(dict(params or {})), check)
        return builder

    return add


def available_variants() -> list[str]:
    return sorted(_VARIANTS)


def variant_params(variant: str) -> Mapping[str, VariantParam]:
    """The parameters a registered variant takes (empty for an unknown variant)."""
    registered = _VARIANTS.get(variant)
    return registered.params if registered else MappingProxyType({})


def resolve_variant_params(
    variant: str, given: Mapping[str, VariantValue]
) -> dict[str, VariantValue]:
    """A variant's parameters: `given` checked against the variant's, defaults filled in."""
    declared = variant_params(variant)
    unknown = set(given) - set(declared)
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        raise PatchveilError(
            f"model variant {variant!r} has no parameter {', '.join(sorted(unknown))}; "
            f"its parameters are: {allowed}"
        )
    resolved: dict[str, VariantValue] = {}
    for name, param in declared.items():
        value = given.get(name, param.default)
        if value is None:
            if param.required:
                raise PatchveilError(
                    f"model variant {variant!r} needs the parameter {name}"
                    + (f" ({param.help})" if param.help else "")
                )
            continue
        if isinstance(value, bool) or not isinstance(value, param.kind):
            try:
                value = param.kind(value)
            except (TypeError, ValueError):
                raise PatchveilError(
                    f"parameter {name}={value!r} of model variant {variant!r} must be a "
                    f"{param.kind.__name__}"
                ) from None
        resolved[name] = value
    return resolved


def available_sizes() -> list[str]:
    return list(VIT_SIZES)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture; recorded in checkpoints and cards.

    `depth`, `embed_dim`, `num_heads` and `mlp_ratio` override the named size where set;
    `params` are the variant's own (declared beside its `@register_variant`, defaults filled in).
    """

    variant: str
    size: str
    image_size: int
    patch_size: int
    num_classes: int
    in_chans: int = 3
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    params: tuple[tuple[str, VariantValue], ...] = ()

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise PatchveilError(
                f"unknown model variant {self.variant!r}; choose one of "
                f"{', '.join(available_variants())}"
            )
        if self.size not in VIT_SIZES:
            raise PatchveilError(
                f"unknown model size {self.size!r}; choose one of {', '.join(available_sizes())}"
            )
        for name in ("image_size", "patch_size", "num_classes", "in_chans"):
            _check_positive(name, getattr(self, name))
        for name in ("depth", "embed_dim", "num_heads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.mlp_ratio is not None and not self.mlp_ratio > 0:
            raise PatchveilError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.image_size % self.patch_size:
            divisors = [d for d in range(2, self.image_size + 1) if self.image_size % d == 0]
            raise PatchveilError(
                f"patch size {self.patch_size} does not divide image size {self.image_size}; "
                f"choose a patch size that divides {self.image_size} (e.g. "
                f"{', '.join(str(d) for d in divisors[:6])})"
            )
        params = resolve_variant_params(self.variant, dict(self.params))
        object.__setattr__(self, "params", tuple(params.items()))
        check = _VARIANTS[self.variant].check
        if check is not None:
            check(self)
        dims = self.dims
        if dims.embed_dim % dims.num_heads:
            raise PatchveilError(
                f"embed_dim {dims.embed_dim} is not divisible by num_heads {dims.num_heads}; "
                "choose a head count that divides the embedding dimension"
            )

    @property
    def dims(self) -> ViTDims:
        """The named size with this spec's overrides applied."""
        overrides = {
            name: getattr(self, name)
            for name in ("depth", "embed_dim", "num_heads", "mlp_ratio")
            if getattr(self, name) is not None
        }
        return replace(VIT_SIZES[self.size], **overrides)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def param(self, name: str) -> VariantValue | None:
        """The variant parameter `name`, or None where it is unset."""
        return dict(self.params).get(name)

    def to_json(self) -> dict[str, Any]:
        data = {name: value for name, value in asdict(self).items() if value is not None}
        data["params"] = dict(self.params)
        if not self.params:
            del data["params"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = {field.name for field in fields(cls)} | set(_TOP_LEVEL_PARAMS)
        unknown = set(data) - known
        if unknown:
            raise PatchveilError(
                f"model spec has unknown field(s) {', '.join(sorted(unknown))}; "
                f"known fields: {', '.join(sorted(known))}"
            )
        try:
            return cls(
                variant=str(data["variant"]),
                size=str(data["size"]),
                image_size=int(data["image_size"]),
                patch_size=int(data["patch_size"]),
                num_classes=int(data["num_classes"]),
                in_chans=int(data.get("in_chans", 3)),
                params=tuple(
                    {
                        **{name: data[name] for name in _TOP_LEVEL_PARAMS if name in data},
                        **dict(data.get("params") or {}),
                    }.items()
                ),
                **{
                    name: cast(data[name])
                    for name, cast in (
                        ("depth", int),
                        ("embed_dim", int),
                        ("num_heads", int),
                        ("mlp_ratio", float),
                    )
                    if data.get(name) is not None
                },
            )
        except KeyError as missing:
            raise PatchveilError(f"model spec is missing the field {missing}") from None


# Specs written before variants declared their parameters held these at the top level.
_TOP_LEVEL_PARAMS = ("invariance_group", "position_window")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PatchveilError(f"{name} must be a positive integer, got {value!r}")


def _timm_vit(
    spec: ModelSpec, model_class: type[VisionTransformer] = VisionTransformer, **variant_args: Any
) -> VisionTransformer:
    dims = spec.dims
    return model_class(
        img_size=spec.image_size,
        patch_size=spec.patch_size,
        in_chans=spec.in_chans,
        num_classes=spec.num_classes,
        embed_dim=dims.embed_dim,
        depth=dims.depth,
        num_heads=dims.num_heads,
        mlp_ratio=dims.mlp_ratio,
        **variant_args,
    )


@register_variant("standard")
def standard(spec: ModelSpec) -> VisionTransformer:
    """Learned position embedding and a class token; classifies from the class token."""
    return _timm_vit(spec, class_token=True, pos_embed="learn", global_pool="token")


_INVARIANCE_GROUP_HELP = (
    f"the group the patch embedding is invariant to: {', '.join(INVARIANCE_GROUPS)}"
)


_ORBIT_POOL_HELP = f"how the orbit's responses are pooled: {', '.join(ORBIT_POOLS)} (default mean)"


def _check_invariance_group(spec: ModelSpec) -> None:
    group = spec.param("invariance_group")
    if group is not None and group not in INVARIANCE_GROUPS:
        raise PatchveilError(
            f"unknown invariance group {group!r}; choose one of {', '.join(INVARIANCE_GROUPS)}"
        )
    pool = spec.param("orbit_pool")
    if pool is not None:
        if pool not in ORBIT_POOLS:
            raise PatchveilError(
                f"unknown orbit pool {pool!r}; choose one of {', '.join(ORBIT_POOLS)}"
            )
        if group is None:
            raise PatchveilError("orbit_pool needs an invariance_group (orbit pooling)")


@register_variant(
    "invariant",
    {
        "invariance_group": VariantParam(str, "np_cs", help=_INVARIANCE_GROUP_HELP),
        "orbit_pool": VariantParam(str, help=_ORBIT_POOL_HELP),
    },
    check=_check_invariance_group,
)
def invariant(spec: ModelSpec) -> VisionTransformer:
    """Position-free, with a patch embedding exactly invariant to a group acting inside every
    patch (orbit pooling): the same output under any block order and any per-block group
    element, so it needs no key and no retraining for a new key."""
    return _timm_vit(
        spec,
        class_token=False,
        pos_embed="none",
        global_pool="avg",
        embed_layer=_orbit_embed(spec, str(spec.param("invariance_group"))),
    )


def _orbit_embed(spec: ModelSpec, group: str) -> Callable[..., OrbitPatchEmbed | SetPatchEmbed]:
    """timm's `embed_layer` hook: a patch embedding exactly invariant to `group` in each patch
    (a set function of the pixels when the group shuffles them)."""
    layer = SetPatchEmbed if parse_group(group).pixel_shuffle else OrbitPatchEmbed

    def embed(**kwargs: Any) -> OrbitPatchEmbed | SetPatchEmbed:
        return layer(
            img_size=spec.image_size,
            patch_size=spec.patch_size,
            in_chans=spec.in_chans,
            embed_dim=kwargs["embed_dim"],
            group=group,
            pool=str(spec.param("orbit_pool") or "mean"),
        )

    return embed


@register_variant("position_free")
def position_free(spec: ModelSpec) -> VisionTransformer:
    """No position embedding, no class token, mean over tokens: exactly invariant to any
    permutation of the patch tokens (block scrambling)."""
    # timm's pos_embed="none" leaves `pos_embed` as None and `_pos_embed` then only flattens.
    return _timm_vit(spec, class_token=False, pos_embed="none", global_pool="avg")


class WindowPositionViT(VisionTransformer):
    """A position-free ViT plus one learned position per window of w×w blocks: it knows which
    window a token came from and nothing finer, so any order of the blocks inside a window gives
    exactly the same output (the `disposable` cipher with `window=w`)."""

    def __init__(self, *, position_window: int, **kwargs: Any) -> None:
        super().__init__(class_token=False, pos_embed="none", global_pool="avg", **kwargs)
        side = self.patch_embed.grid_size[0]
        per_side = side // position_window
        self.register_buffer(
            "window_of_token",
            torch.as_tensor(window_of_blocks(side, position_window)),
            persistent=False,
        )
        self.window_embed = torch.nn.Parameter(torch.zeros(1, per_side * per_side, self.embed_dim))
        torch.nn.init.trunc_normal_(self.window_embed, std=0.02)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], -1, x.shape[-1]) + self.window_embed[:, self.window_of_token]
        return super()._pos_embed(x)


def _check_window(spec: ModelSpec) -> None:
    _check_invariance_group(spec)
    window = spec.param("position_window")
    _check_positive("position_window", window)
    side = spec.image_size // spec.patch_size
    if side % int(window or 1):
        raise PatchveilError(f"position_window {window} does not divide the {side} blocks per side")


@register_variant(
    "window_position",
    {
        "position_window": VariantParam(
            int, required=True, help="the disposable cipher's window, in blocks"
        ),
        "invariance_group": VariantParam(str, help=_INVARIANCE_GROUP_HELP),
        "orbit_pool": VariantParam(str, help=_ORBIT_POOL_HELP),
    },
    check=_check_window,
)
def window_position(spec: ModelSpec) -> VisionTransformer:
    """Position-free inside each window of `position_window` blocks, one learned position per
    window (the coarse layout the `disposable` cipher keeps with its `window` parameter); with
    `invariance_group`, the patch embedding is also exactly invariant to that per-block group."""
    extra: dict[str, Any] = {}
    group = spec.param("invariance_group")
    if group is not None:
        extra["embed_layer"] = _orbit_embed(spec, str(group))
    return _timm_vit(
        spec, WindowPositionViT, position_window=int(spec.param("position_window") or 1), **extra
    )


def create_vit(
    variant: str,
    size: str,
    *,
    image_size: int,
    patch_size: int,
    num_classes: int,
    in_chans: int = 3,
    pretrained_path: str | os.PathLike[str] | None = None,
    depth: int | None = None,
    embed_dim: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    **params: VariantValue,
) -> VisionTransformer:
    """Build a registered ViT variant with its own `params` (e.g. `position_window=4`);
    optionally load a local state dict (never downloads)."""
    spec = ModelSpec(
        variant=variant,
        size=size,
        image_size=image_size,
        patch_size=patch_size,
        num_classes=num_classes,
        in_chans=in_chans,
        depth=depth,
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        params=tuple(params.items()),
    )
    return create_vit_from_spec(spec, pretrained_path=pretrained_path)


def create_vit_from_spec(
    spec: ModelSpec, *, pretrained_path: str | os.PathLike[str] | None = None
) -> VisionTransformer:
    """Build the model a `ModelSpec` describes."""
    model = _VARIANTS[spec.variant].build(spec)
    if pretrained_path is not None:
        load_state_dict_file(model, pretrained_path)
    return model


def load_state_dict_file(model: torch.nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a local `.pth`/`.pt` or `.safetensors` state dict into `model`, strictly."""
    file = Path(path)
    if not file.is_file():
        raise PatchveilError(f"pretrained weights {str(file)!r} do not exist or are not a file")
    try:
        if file.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise PatchveilError(
                    f"{str(file)!r} is a .safetensors file but the safetensors package is not "
                    "installed; install it or save the weights with torch.save"
                ) from None
            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except PatchveilError:
        raise
    except Exception as error:
        raise PatchveilError(
            f"cannot read pretrained weights {str(file)!r}: {type(error).__name__}: {error}"
        ) from None
    # Accept a training checkpoint that wraps the state dict.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise PatchveilError(
            f"pretrained weights {str(file)!r} hold a {type(state).__name__}, not a state dict"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {list(state[name].shape)} (model needs {list(expected[name].shape)})"
        for name in expected
        if name in state and tuple(state[name].shape) != tuple(expected[name].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch in {_first(mismatched)}")
    if problems:
        raise PatchveilError(
            f"pretrained weights {str(file)!r} do not fit this model: {'; '.join(problems)}. "
            "Build the model with the ModelSpec the weights were trained with"
        )
    model.load_state_dict(state, strict=True)


def _first(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"
