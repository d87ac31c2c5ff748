"""The search space of the privacy frontier: cipher geometry, model and training settings, and
nothing but valid combinations (the model variant always matches the cipher's invariance)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from patchveil.errors import PatchveilError
from patchveil.groups import GROUP_NAMES
from patchveil.models.invariant_embed import ORBIT_POOLS
from patchveil.models.vit import VIT_SIZES, ModelSpec

#: The per-image cipher every searched configuration uses; `plain` only for the references.
SEARCHED_CIPHER = "disposable"
PLAIN = "plain"
#: The plain reference's learning rate (TrainConfig's default).
PLAIN_LEARNING_RATE = 1e-3
#: Width of one attention head: a width w gets w // HEAD_WIDTH heads.
HEAD_WIDTH = 64
#: Orbit pooling of the invariant patch embedding when a configuration names none.
DEFAULT_ORBIT_POOL = "mean"


def blocks_per_side(image_size: int, block_size: int) -> int:
    if block_size <= 0 or image_size % block_size:
        raise PatchveilError(
            f"block size {block_size} does not divide the image size {image_size}; choose one "
            f"of {', '.join(map(str, block_sizes_for(image_size)))}"
        )
    return image_size // block_size


def block_sizes_for(image_size: int) -> list[int]:
    """Block sizes that tile the image into at least a 2×2 grid of blocks."""
    return [size for size in range(2, image_size // 2 + 1) if image_size % size == 0]


def windows_for(side: int) -> list[int]:
    """Windows (in blocks) a block order may be confined to on a `side`×`side` grid: 0 (the
    whole image) and every proper divisor of `side` from 2 (a window of `side` is the whole
    image again, and of 1 moves nothing)."""
    return [0, *(window for window in range(2, side) if side % window == 0)]


def compatible_variants(window: int, group: str) -> list[str]:
    """The model variants that are exactly invariant to `disposable` with this window and group
    (so a fresh key gives the same output as the tenant's own): position-free models fit any
    block order, `window_position` only a windowed one; a per-block group needs orbit pooling."""
    whole_image = "position_free" if group == "none" else "invariant"
    return [whole_image] if window == 0 else ["window_position", whole_image]


def variant_params(
    variant: str, window: int, group: str, orbit_pool: str = DEFAULT_ORBIT_POOL
) -> dict[str, Any]:
    """The variant's own parameters that make it invariant to the cipher (and how it pools a
    patch's orbit, where it has one and it is not the default mean)."""
    pooled = {} if orbit_pool == DEFAULT_ORBIT_POOL else {"orbit_pool": orbit_pool}
    if variant == "window_position":
        return {
            "position_window": window,
            **({"invariance_group": group, **pooled} if group != "none" else {}),
        }
    if variant == "invariant":
        return {"invariance_group": group, **pooled}
    return {}


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search: what the tenants encrypt with and what the platform trains."""

    block_size: int
    window: int
    group: str
    variant: str
    depth: int
    embed_dim: int
    learning_rate: float
    block_cutmix: float
    epochs: int
    image_size: int = 32
    size: str = "cpu"
    cipher: str = SEARCHED_CIPHER
    model_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_params", dict(self.model_params))
        check_config(self)

    @property
    def num_heads(self) -> int:
        return max(1, self.embed_dim // HEAD_WIDTH)

    @property
    def cipher_params(self) -> dict[str, Any]:
        """The cipher's parameters, as a tenant's key is made with them."""
        return {} if self.cipher == PLAIN else {"group": self.group, "window": self.window}

    def model_spec(self, num_classes: int = 10) -> ModelSpec:
        return ModelSpec(
            variant=self.variant,
            size=self.size,
            image_size=self.image_size,
            patch_size=self.block_size,
            num_classes=num_classes,
            depth=self.depth,
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            params=tuple(sorted(self.model_params.items())),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_params"] = dict(self.model_params)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialConfig:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{name: value for name, value in data.items() if name in known})

    def plain_reference(self) -> TrialConfig:
        """The same budget on plain images: the same images, block (patch) size, depth, width
        and epochs, the standard ViT with its position embedding, trained with the house
        recipe (`PLAIN_LEARNING_RATE`, no block cutmix) as the paper table's plain row is, so
        that trials differing only in their tuned learning rate share one reference."""
        return TrialConfig(
            block_size=self.block_size,
            window=0,
            group="none",
            variant="standard",
            depth=self.depth,
            embed_dim=self.embed_dim,
            learning_rate=PLAIN_LEARNING_RATE,
            block_cutmix=0.0,
            epochs=self.epochs,
            image_size=self.image_size,
            size=self.size,
            cipher=PLAIN,
        )

    @property
    def orbit_pool(self) -> str:
        return str(self.model_params.get("orbit_pool", DEFAULT_ORBIT_POOL))

    @property
    def label(self) -> str:
        """A short human name: cipher geometry, then the model (and its orbit pool if not the
        mean)."""
        if self.cipher == PLAIN:
            return f"plain-b{self.block_size}"
        where = f"w{self.window}" if self.window else "whole"
        pool = "" if self.orbit_pool == DEFAULT_ORBIT_POOL else f"-{self.orbit_pool}"
        return f"b{self.block_size}-{where}-{self.group}-{self.variant}{pool}"


def check_config(config: TrialConfig) -> None:
    """Raise a PatchveilError naming what is wrong with a configuration (none if valid)."""
    side = blocks_per_side(config.image_size, config.block_size)
    if config.block_size not in block_sizes_for(config.image_size):
        raise PatchveilError(
            f"block size {config.block_size} leaves fewer than 2×2 blocks on a "
            f"{config.image_size}-px image"
        )
    if config.group not in GROUP_NAMES:
        raise PatchveilError(f"unknown group {config.group!r}; choose one of {GROUP_NAMES}")
    if config.cipher == PLAIN:
        if (config.window, config.group, config.variant) != (0, "none", "standard"):
            raise PatchveilError("a plain reference has window 0, group none, variant standard")
    elif config.cipher != SEARCHED_CIPHER:
        raise PatchveilError(f"cipher {config.cipher!r} is not searched; use {SEARCHED_CIPHER!r}")
    else:
        if config.window not in windows_for(side):
            raise PatchveilError(
                f"window {config.window} does not fit {side}×{side} blocks; choose one of "
                f"{windows_for(side)}"
            )
        allowed = compatible_variants(config.window, config.group)
        if config.variant not in allowed:
            raise PatchveilError(
                f"variant {config.variant!r} is not invariant to window {config.window}, group "
                f"{config.group}; choose one of {allowed}"
            )
        if config.orbit_pool not in ORBIT_POOLS:
            raise PatchveilError(
                f"unknown orbit pool {config.orbit_pool!r}; choose one of {ORBIT_POOLS}"
            )
        expected = variant_params(config.variant, config.window, config.group, config.orbit_pool)
        if dict(config.model_params) != expected:
            raise PatchveilError(
                f"variant {config.variant!r} with window {config.window}, group {config.group} "
                f"needs the parameters {expected}, got {dict(config.model_params)}"
            )
    if config.size not in VIT_SIZES:
        raise PatchveilError(f"unknown model size {config.size!r}")
    if config.depth < 1 or config.embed_dim < HEAD_WIDTH or config.embed_dim % HEAD_WIDTH:
        raise PatchveilError(
            f"depth {config.depth} must be ≥ 1 and width {config.embed_dim} a multiple of "
            f"{HEAD_WIDTH}"
        )
    if not (math.isfinite(config.learning_rate) and 0 < config.learning_rate < 1):
        raise PatchveilError(f"learning rate {config.learning_rate} must be in (0, 1)")
    if not 0 <= config.block_cutmix <= 1:
        raise PatchveilError(f"block cutmix {config.block_cutmix} must be in [0, 1]")
    if config.epochs < 1:
        raise PatchveilError(f"epochs must be at least 1, got {config.epochs}")
    config.model_spec()  # the model's own checks (window divides the grid, heads divide width)


@dataclass(frozen=True)
class SearchSpace:
    """The choices each dimension offers; `suggest` draws only valid combinations from them."""

    image_size: int = 32
    block_sizes: tuple[int, ...] = (4, 8)
    groups: tuple[str, ...] = GROUP_NAMES
    depths: tuple[int, ...] = (4, 6)
    widths: tuple[int, ...] = (128, 192)
    learning_rate: tuple[float, float] = (3e-4, 3e-3)
    block_cutmix: tuple[float, ...] = (0.0, 0.5)
    epochs: tuple[int, ...] = (4,)
    size: str = "cpu"
    orbit_pools: tuple[str, ...] = (DEFAULT_ORBIT_POOL,)

    def __post_init__(self) -> None:
        for block_size in self.block_sizes:
            if block_size not in block_sizes_for(self.image_size):
                raise PatchveilError(
                    f"block size {block_size} cannot be searched on {self.image_size}-px images; "
                    f"choose from {block_sizes_for(self.image_size)}"
                )
        unknown = set(self.groups) - set(GROUP_NAMES)
        if unknown:
            raise PatchveilError(f"unknown groups {sorted(unknown)}; choose from {GROUP_NAMES}")
        low, high = self.learning_rate
        if not 0 < low <= high < 1:
            raise PatchveilError(f"learning-rate range {self.learning_rate} must be in (0, 1)")
        unknown = set(self.orbit_pools) - set(ORBIT_POOLS)
        if unknown:
            raise PatchveilError(
                f"unknown orbit pools {sorted(unknown)}; choose from {list(ORBIT_POOLS)}"
            )
        dimensions = ("block_sizes", "groups", "depths", "widths", "block_cutmix", "epochs")
        for name in (*dimensions, "orbit_pools"):
            if not getattr(self, name):
                raise PatchveilError(f"the search space needs at least one of {name}")

    @property
    def max_epochs(self) -> int:
        return max(self.epochs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Optuna define-by-run: draw one valid configuration and return it as `{"trial": ...}`.

    Conditional dimensions get their own parameter per condition (`window_b4`, `position_w4`):
    Optuna refuses a categorical whose choices change between trials, and the windows a grid
    allows depend on the block size, the variants on the window."""
    block_size = int(trial.suggest_categorical("block_size", list(space.block_sizes)))
    side = blocks_per_side(space.image_size, block_size)
    window = int(trial.suggest_categorical(f"window_b{block_size}", windows_for(side)))
    group = str(trial.suggest_categorical("group", list(space.groups)))
    variants = compatible_variants(window, group)
    variant = variants[0]
    if len(variants) > 1:
        # The same two choices for every group: a position per window, or no position at all.
        position = trial.suggest_categorical(f"position_w{window}", ["per_window", "none"])
        variant = variants[0] if position == "per_window" else variants[1]
    orbit_pool = DEFAULT_ORBIT_POOL
    if group != "none":
        # Unconditional name: the choices are the same whichever group carries the orbit.
        orbit_pool = str(trial.suggest_categorical("orbit_pool", list(space.orbit_pools)))
    config = TrialConfig(
        block_size=block_size,
        window=window,
        group=group,
        variant=variant,
        model_params=variant_params(variant, window, group, orbit_pool),
        depth=int(trial.suggest_categorical("depth", list(space.depths))),
        embed_dim=int(trial.suggest_categorical("embed_dim", list(space.widths))),
        learning_rate=float(trial.suggest_float("learning_rate", *space.learning_rate, log=True)),
        block_cutmix=float(trial.suggest_categorical("block_cutmix", list(space.block_cutmix))),
        epochs=int(trial.suggest_categorical("epochs", list(space.epochs))),
        image_size=space.image_size,
        size=space.size,
    )
    return {"trial": config.to_json()}


def trial_config_of(tune_config: Mapping[str, Any]) -> TrialConfig:
    """The TrialConfig inside a Tune trial's config (what `suggest` returned)."""
    return TrialConfig.from_json(tune_config["trial"])


def parse_choices(text: str | Sequence[str], cast: type) -> tuple[Any, ...]:
    """ "4,8" (or ["4", "8"]) → (4, 8), for command-line choices."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(cast(item.strip()) for item in items if str(item).strip())


#: `--start-with` keys for the dimensions that need no other: key → (Optuna parameter, type,
#: the SearchSpace field offering the choices). block, window and model are handled apart.
_PLAIN_START_KEYS: dict[str, tuple[str, type, str]] = {
    "group": ("group", str, "groups"),
    "pool": ("orbit_pool", str, "orbit_pools"),
    "cutmix": ("block_cutmix", float, "block_cutmix"),
    "depth": ("depth", int, "depths"),
    "width": ("embed_dim", int, "widths"),
    "epochs": ("epochs", int, "epochs"),
}
START_KEYS = ("block", "window", "model", "lr", *_PLAIN_START_KEYS)


def start_point(text: str, space: SearchSpace) -> dict[str, Any]:
    """`"block=4,window=4,group=rf,model=window_position"` → the Optuna parameters `suggest`
    would draw for it (Tune's `points_to_evaluate`: the search measures these first). Keys not
    given are drawn as usual; every value must be one the space offers."""
    given: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in START_KEYS:
            raise PatchveilError(
                f"start point {text!r}: {item!r} is not KEY=VALUE with a key among "
                f"{', '.join(START_KEYS)}"
            )
        given[key] = value

    def choose(key: str, cast: type, choices: Sequence[Any]) -> Any:
        try:
            value = cast(given[key])
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(cast, "text")
            raise PatchveilError(
                f"start point {text!r}: {key}={given[key]!r} is not {kind}"
            ) from None
        if choices and value not in choices:
            raise PatchveilError(
                f"start point {text!r}: {key}={value} is not in the search space "
                f"({', '.join(map(str, choices))})"
            )
        return value

    point: dict[str, Any] = {}
    for key, (parameter, cast, field_name) in _PLAIN_START_KEYS.items():
        if key in given:
            point[parameter] = choose(key, cast, getattr(space, field_name))
    if ("window" in given and "block" not in given) or (
        "model" in given and not {"window", "group"} <= set(given)
    ):
        raise PatchveilError(
            f"start point {text!r}: a window needs its block, a model its window and group"
        )
    if "block" in given:
        block = point["block_size"] = choose("block", int, space.block_sizes)
        if "window" in given:
            window = choose("window", int, windows_for(blocks_per_side(space.image_size, block)))
            point[f"window_b{block}"] = window
            if "model" in given:
                variant = choose("model", str, compatible_variants(window, point["group"]))
                if window:
                    position = "per_window" if variant == "window_position" else "none"
                    point[f"position_w{window}"] = position
    if "lr" in given:
        low, high = space.learning_rate
        rate = choose("lr", float, ())
        if not low <= rate <= high:
            raise PatchveilError(f"start point {text!r}: lr={rate} is outside [{low}, {high}]")
        point["learning_rate"] = rate
    return point
