"""Named cipher presets, read from the committed privacy frontier (bench/results/frontier.json).

Neutral: no key, no image, no cipher code. Every preset is a point of the measured front (see
`patchveil.experiments.frontier`); its numbers are the ones measured, never typed. The default
preset is the most accurate one whose strongest attack failed by the product's bar; the file
says when no trial qualified, and then there is no default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchveil.errors import PatchveilError

#: Where the presets come from: $PATCHVEIL_FRONTIER, else the committed results of this checkout.
FRONTIER_ENV = "PATCHVEIL_FRONTIER"
COMMITTED_FRONTIER = Path(__file__).resolve().parents[1] / "bench" / "results" / "frontier.json"


@dataclass(frozen=True)
class Preset:
    """A cipher configuration with the model it was measured with and what was measured."""

    name: str
    cipher: str
    block_size: int
    image_size: int
    params: Mapping[str, Any]
    model: Mapping[str, Any]
    training: Mapping[str, Any]
    measured: Mapping[str, Any]
    default: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preset:
        try:
            return cls(
                name=str(data["name"]),
                cipher=str(data["cipher"]),
                block_size=int(data["block_size"]),
                image_size=int(data["image_size"]),
                params=dict(data["params"]),
                model=dict(data["model"]),
                training=dict(data["training"]),
                measured=dict(data["measured"]),
                default=bool(data.get("default", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise PatchveilError(f"a preset in the frontier file is malformed: {error}") from None

    @property
    def cipher_params(self) -> dict[str, str]:
        """The cipher's parameters as `--param name=value` strings take them."""
        return {name: str(value) for name, value in self.params.items()}

    def summary(self) -> str:
        """One line: geometry, accuracy and attack success as measured."""
        measured = self.measured
        plain = measured.get("plain_accuracy")
        plain_text = f", plain {plain:.1%}" if isinstance(plain, int | float) else ""
        params = " ".join(f"{name}={value}" for name, value in self.params.items())
        return (
            f"{self.cipher} block {self.block_size} {params}: own key "
            f"{measured['own_key_accuracy']:.1%}, fresh key {measured['fresh_key_accuracy']:.1%}"
            f"{plain_text}; attack SSIM {measured['attack_ssim']:.2f}, neighbour "
            f"{measured['attack_neighbour']:.1%}, linkage rank-1 {measured['linkage_rank1']:.0%}"
        )


@dataclass(frozen=True)
class PresetTable:
    """All presets of one frontier file and where it came from."""

    presets: tuple[Preset, ...]
    default_name: str | None
    source: Path
    commit: str = ""

    @property
    def default(self) -> Preset | None:
        return next((p for p in self.presets if p.name == self.default_name), None)

    def get(self, name: str) -> Preset:
        for preset in self.presets:
            if preset.name == name:
                return preset
        names = ", ".join(p.name for p in self.presets) or "none (run `patchveil tune`)"
        raise PatchveilError(f"no preset {name!r} in {self.source}; presets: {names}")


def frontier_path() -> Path:
    configured = os.environ.get(FRONTIER_ENV)
    return Path(configured) if configured else COMMITTED_FRONTIER


def load_presets(path: Path | str | None = None) -> PresetTable:
    """The presets of a frontier file (default: `frontier_path()`); empty if it does not exist."""
    source = Path(path) if path is not None else frontier_path()
    if not source.is_file():
        return PresetTable((), None, source)
    try:
        payload = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PatchveilError(f"cannot read the frontier file {source}: {error}") from None
    presets = tuple(Preset.from_json(item) for item in payload.get("presets", []))
    default_name = payload.get("default_preset")
    if default_name is not None and default_name not in {p.name for p in presets}:
        raise PatchveilError(f"{source}: default preset {default_name!r} is not among its presets")
    return PresetTable(presets, default_name, source, str(payload.get("commit", "")))


def apply_preset(
    name: str,
    cipher: str | None,
    block_size: int | None,
    params: Mapping[str, str],
    path: Path | str | None = None,
) -> tuple[str, int, dict[str, str]]:
    """Cipher, block size and parameters for onboarding with a preset: the preset fills what is
    not given; a given value that differs from the preset's is refused (name both)."""
    preset = load_presets(path).get(name)
    if cipher is not None and cipher != preset.cipher:
        raise PatchveilError(f"--cipher {cipher} contradicts preset {name} ({preset.cipher})")
    if block_size is not None and block_size != preset.block_size:
        raise PatchveilError(
            f"--block-size {block_size} contradicts preset {name} (block {preset.block_size})"
        )
    merged = preset.cipher_params
    for key, value in params.items():
        if key in merged and merged[key] != value:
            raise PatchveilError(
                f"--param {key}={value} contradicts preset {name} ({key}={merged[key]})"
            )
        merged[key] = value
    return preset.cipher, preset.block_size, merged


#: What `patchveil train --preset` takes from a preset: CLI option → its value in the preset.
TRAINING_FIELDS = (
    "variant",
    "invariance_group",
    "position_window",
    "orbit_pool",
    "learning_rate",
    "block_cutmix",
)


def preset_training(
    name: str, given: Mapping[str, Any], path: Path | str | None = None
) -> dict[str, Any]:
    """The model and training settings a preset was measured with (variant, its parameters,
    learning rate, block cutmix), for `patchveil train --preset`: the preset fills what `given`
    leaves None; a given value that differs from the preset's is refused (name both)."""
    preset = load_presets(path).get(name)
    params = dict(preset.model.get("params", {}))
    measured_with: dict[str, Any] = {
        "variant": preset.model.get("variant"),
        "invariance_group": params.get("invariance_group"),
        "position_window": params.get("position_window"),
        "orbit_pool": params.get("orbit_pool"),
        "learning_rate": preset.training.get("learning_rate"),
        "block_cutmix": preset.training.get("block_cutmix"),
    }
    resolved = {}
    for field in TRAINING_FIELDS:
        value, wanted = given.get(field), measured_with[field]
        if value is not None and wanted is not None and value != wanted:
            option = "--" + field.replace("_", "-")
            raise PatchveilError(f"{option} {value} contradicts preset {name} ({wanted})")
        resolved[field] = value if value is not None else wanted
    return resolved
