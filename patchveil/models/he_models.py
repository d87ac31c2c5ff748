"""Servable homomorphic models: named presets and the folder a trained one lives in.

A trained square-activation network (`square_nets.SquareNet`) is kept under the platform home as
`<home>/he-models/<name>/weights.npz` (arrays and a JSON header, no pickle) beside `model.json`
(an `HEModelCard`: what it was trained on, the input layout a tenant must encrypt for, how pixel
values are scaled, and which perceptual cipher, if any, the tenant applies before CKKS).

Presets register by name with their architecture next to them; the training pipeline
(`patchveil.pipelines.he_training`) and `bench/he_inference.py` build from them alike.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchveil.errors import PatchveilError
from patchveil.fsutil import write_bytes_atomic
from patchveil.models.square_nets import InputLayout, SquareNet, SquareNetConfig, SquareNetError

MODELS_FOLDER = "he-models"
WEIGHTS_FILE = "weights.npz"
CARD_FILE = "model.json"
# A model name becomes a folder and, with "-he", a route: /v2/models/{name}-he/infer.
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class HEModelError(PatchveilError):
    """A homomorphic model cannot be found, read or saved."""


@dataclass(frozen=True)
class HEPreset:
    """How one kind of homomorphic model is built: its architecture and where its data comes from
    (`"uci-digits"`: scikit-learn's bundled digits; `"dataset"`: a published ciphertext dataset
    version of the platform)."""

    name: str
    source: str
    config: SquareNetConfig
    summary: str


PRESETS: dict[str, HEPreset] = {}


def register_preset(preset: HEPreset) -> HEPreset:
    if preset.name in PRESETS:
        raise HEModelError(f"HE preset {preset.name!r} is registered twice")
    PRESETS[preset.name] = preset
    return preset


register_preset(
    HEPreset(
        name="digits",
        source="uci-digits",
        # 4×4 windows at stride 2 (9 windows, 12 channels): a 108-wide dense layer, which the
        # latency packing's matrix product pays for in rotations (3×3 at stride 1: 288 wide).
        config=SquareNetConfig(kernel_size=4, stride=2, channels=12, epochs=60),
        summary="CryptoNets on the UCI 8×8 digits: conv → square → dense → square → dense",
    )
)
register_preset(
    HEPreset(
        name="bag-of-patches",
        source="dataset",
        # Non-overlapping 4×4 blocks and a mean over them: the block order a disposable cipher
        # draws afresh per image does not change the prediction. No shifts: they would cut blocks.
        config=SquareNetConfig(
            kernel_size=4, stride=4, pool="mean", channels=16, epochs=20, max_shift=0
        ),
        summary="patch embedding → square → mean over patches → dense → square → dense, "
        "on a platform ciphertext dataset",
    )
)


def preset(name: str) -> HEPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise HEModelError(
            f"no homomorphic model preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise HEModelError(
            f"model name {name!r} is not valid: use 1–63 lower-case letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class QueryCipher:
    """The perceptual cipher a tenant applies to an image before CKKS (the model was trained on
    such ciphertext): its name and block layout, never a key."""

    cipher: str
    block_size: int
    image_size: int


@dataclass(frozen=True)
class HEModelCard:
    """What a tenant needs to query the model, and where it came from."""

    name: str
    preset: str
    dataset: str
    image_shape: tuple[int, int, int]
    kernel_size: int
    stride: int
    pool: str
    classes: int
    # Tenant's pixel scaling before CKKS: value / pixel_scale (UCI digits: 16; images: 255).
    pixel_scale: float
    plain_accuracy: float
    test_images: int
    train_seconds: float
    trained_at: str
    weights_sha256: str = ""
    query_cipher: QueryCipher | None = None
    packings: tuple[str, ...] = ("throughput", "latency")
    architecture: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> InputLayout:
        return InputLayout(self.image_shape, self.kernel_size, self.stride)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_shape"] = list(self.image_shape)
        data["packings"] = list(self.packings)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HEModelCard:
        values = dict(data)
        values["image_shape"] = tuple(int(side) for side in values["image_shape"])
        values["packings"] = tuple(values.get("packings", ()))
        cipher = values.get("query_cipher")
        values["query_cipher"] = None if cipher is None else QueryCipher(**cipher)
        return cls(**values)


@dataclass(frozen=True)
class HEModel:
    card: HEModelCard
    net: SquareNet


def models_folder(home: Path) -> Path:
    return Path(home) / MODELS_FOLDER


def model_folder(home: Path, name: str) -> Path:
    return models_folder(home) / check_model_name(name)


def save_he_model(home: Path, card: HEModelCard, net: SquareNet) -> HEModelCard:
    """Write weights then card, each atomically (a model trained again replaces the old one);
    returns the card as saved, with the weights' checksum."""
    if net.name != card.name:
        raise HEModelError(f"the weights are named {net.name!r}, the card {card.name!r}")
    folder = model_folder(home, card.name)
    folder.mkdir(parents=True, exist_ok=True)
    weights = net.to_bytes()
    card = HEModelCard(**{**card.__dict__, "weights_sha256": hashlib.sha256(weights).hexdigest()})
    write_bytes_atomic(folder / WEIGHTS_FILE, weights)
    write_bytes_atomic(folder / CARD_FILE, json.dumps(card.to_json(), indent=2).encode() + b"\n")
    return card


def load_he_model(home: Path, name: str) -> HEModel:
    folder = model_folder(home, name)
    if not (folder / CARD_FILE).is_file():
        known = list_he_models(home)
        raise HEModelError(
            f"no homomorphic model {name!r} under {models_folder(home)}; "
            + (
                f"trained ones: {', '.join(known)}"
                if known
                else "train one with `patchveil he train`"
            )
        )
    try:
        card = HEModelCard.from_json(json.loads((folder / CARD_FILE).read_text()))
        weights = (folder / WEIGHTS_FILE).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HEModelError(
            f"homomorphic model {name!r} in {folder} is unreadable ({error})"
        ) from None
    if card.weights_sha256 and hashlib.sha256(weights).hexdigest() != card.weights_sha256:
        raise HEModelError(f"{folder / WEIGHTS_FILE} does not match the checksum in its card")
    try:
        net = SquareNet.from_bytes(weights)
    except SquareNetError as error:
        raise HEModelError(f"homomorphic model {name!r}: {error}") from None
    if net.layout != card.layout or net.classes != card.classes:
        raise HEModelError(f"homomorphic model {name!r}: the weights do not fit its card")
    return HEModel(card, net)


def list_he_models(home: Path) -> list[str]:
    """Names of the models under `<home>/he-models`, sorted."""
    folder = models_folder(home)
    if not folder.is_dir():
        return []
    return sorted(
        path.name
        for path in folder.iterdir()
        if (path / CARD_FILE).is_file() and _MODEL_NAME.fullmatch(path.name)
    )
