"""The audit card: for every cipher setting, the strongest attack's scores in each category next to
the cipher's accuracy, gathered from the result files of the benches that measured them.

Pure functions over result JSON (each source keeps its own command, commit, machine and date); a
setting a bench did not measure shows as not measured, never as a number. `bench/audit_card.py`
writes the card; `patchveil audit card` is the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The result files the card reads, by the attack category they measure.
SOURCES = {
    "jigsaw": "jigsaw_strong.json",
    "linkage_and_keys": "linkage_and_keys.json",
    "leakage_and_inversion": "leakage_and_inversion.json",
    "model_inversion": "model_inversion.json",
    # The same strong jigsaw, run by the group sweep and on every frontier trial's ciphertexts.
    "jigsaw_groups": "jigsaw_groups.json",
    "frontier": "frontier.json",
    "frontier_rf_15_epochs": "frontier_rf_15_epochs.json",
}
# Accuracy tables, most trusted first (longer training first).
ACCURACY_SOURCES = ("paper_table_15_epochs.json", "paper_table.json")


@dataclass(frozen=True)
class Setting:
    """A cipher configuration: name, resolved parameters, geometry."""

    cipher: str
    params: tuple[tuple[str, Any], ...]
    block_size: int
    image_size: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Setting:
        params = resolved_params(str(row["cipher"]), dict(row.get("params") or {}))
        return cls(
            str(row["cipher"]),
            tuple(sorted(params.items())),
            int(row.get("block_size", 4)),
            int(row.get("image_size", 32)),
        )

    def label(self) -> str:
        shown = ", ".join(f"{name}={value}" for name, value in self.params)
        return f"{self.cipher}({shown})" if shown else self.cipher


def resolved_params(cipher: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with the cipher's defaults filled in, so rows of different benches match."""
    from patchveil.errors import PatchveilError
    from patchveil.tenants.ciphers import cipher_class

    try:
        return cipher_class(cipher).resolve_params(params)
    except PatchveilError:  # an unknown cipher or parameter in an old file: keep it as written
        return params


@dataclass
class CardRow:
    """One cipher setting on the card."""

    setting: Setting
    accuracy: dict[str, Any] | None = None
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        strongest = strongest_reconstruction(self.attacks)
        return {
            "cipher": self.setting.cipher,
            "params": dict(self.setting.params),
            "block_size": self.setting.block_size,
            "image_size": self.setting.image_size,
            "accuracy": self.accuracy,
            **self.attacks,
            "strongest_reconstruction": strongest,
        }


# Attacks whose output is a whole reconstructed image scored against the plain one (the in-block
# key recovery leaves block order to the jigsaw, so its SSIM is not one).
RECONSTRUCTIONS = ("jigsaw", "inversion")


def strongest_reconstruction(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The attack whose reconstruction is closest to the plain images (highest SSIM)."""
    scored = [
        (float(attacks[name]["ssim"]), name)
        for name in RECONSTRUCTIONS
        if isinstance(attacks.get(name), Mapping)
        and isinstance(attacks[name].get("ssim"), int | float)
    ]
    if not scored:
        return None
    ssim, name = max(scored)
    return {"attack": name, "ssim": ssim}


def load_sources(results: Path) -> dict[str, dict[str, Any]]:
    """Every source result file that exists, by category."""
    found = {}
    for category, name in SOURCES.items():
        path = results / name
        if path.exists():
            found[category] = json.loads(path.read_text())
    return found


def accuracy_index(results: Path) -> dict[Setting, dict[str, Any]]:
    """The best-trained accuracy row of each cipher setting (own key, fresh key, plain)."""
    index: dict[Setting, dict[str, Any]] = {}
    for name in ACCURACY_SOURCES:
        path = results / name
        if not path.exists():
            continue
        table = json.loads(path.read_text())
        plain = next(
            (r["own_key_accuracy"] for r in table["rows"] if r.get("name") == "plain"), None
        )
        for row in table["rows"]:
            setting = Setting.of({**row, "block_size": table.get("block_size", 4)})
            entry = {
                "own_key": row.get("own_key_accuracy"),
                "fresh_key": row.get("fresh_key_accuracy"),
                "plain": plain,
                "model_variant": row.get("model_variant"),
                "row": row.get("name"),
                "epochs": table.get("epochs"),
                "source": name,
            }
            best = index.get(setting)
            if best is None or (
                best["source"] == name and (entry["own_key"] or 0) > (best["own_key"] or 0)
            ):
                index[setting] = entry
    # Settings no paper table trained: the frontier's complete trials (validation images).
    frontier = results / "frontier.json"
    trials = json.loads(frontier.read_text()).get("trials", []) if frontier.exists() else []
    for trial in trials:
        if trial.get("stopped_early"):
            continue
        config = trial["config"]
        setting = Setting.of(
            {
                "cipher": config["cipher"],
                "params": {"group": config["group"], "window": config["window"]},
                "block_size": config["block_size"],
                "image_size": config["image_size"],
            }
        )
        source = f"{frontier.name} (validation)"
        best = index.get(setting)
        if best is None or (
            best["source"] == source and trial["own_key_accuracy"] > (best["own_key"] or 0)
        ):
            index[setting] = {
                "own_key": trial["own_key_accuracy"],
                "fresh_key": trial["fresh_key_accuracy"],
                "plain": trial.get("plain_accuracy"),
                "model_variant": config["variant"],
                "row": trial["label"],
                "epochs": config["epochs"],
                "source": source,
            }
    return index


def build_card(
    sources: Mapping[str, Mapping[str, Any]], accuracy: Mapping[Setting, dict[str, Any]]
) -> list[CardRow]:
    """One row per cipher setting any source measured, with every category it has."""
    rows: dict[Setting, CardRow] = {}

    def row_for(source_row: Mapping[str, Any]) -> CardRow:
        setting = Setting.of(source_row)
        if setting not in rows:
            rows[setting] = CardRow(setting, accuracy.get(setting))
        return rows[setting]

    for source_row in jigsaw_rows(sources):
        best = strongest_solver(source_row)
        card_row = row_for(source_row)
        known = card_row.attacks.get("jigsaw")
        # Two image sets of one setting (photographs, upsampled CIFAR): the stronger result.
        if best is not None and (known is None or best["direct"] > known["direct"]):
            card_row.attacks["jigsaw"] = best
    for source_row in _rows(sources.get("linkage_and_keys")):
        card_row = row_for(source_row)
        if "linkage" in source_row:
            card_row.attacks["linkage"] = _pick(source_row["linkage"], ("rank1", "rank5"))
        if "known_plaintext" in source_row:
            card_row.attacks["known_plaintext"] = _pick(
                source_row["known_plaintext"], ("key_fraction", "pixel_exact", "images_exact")
            )
        if "ciphertext_only" in source_row:
            card_row.attacks["in_block_key"] = _pick(
                source_row["ciphertext_only"], ("np_recovered", "ps_recovered", "ssim", "psnr")
            )
    for source_row in _rows(sources.get("leakage_and_inversion")):
        if "null" in str(source_row.get("row", "")) or "pairing" in (
            source_row.get("params") or {}
        ):
            continue  # the shuffled-pairs control, not a cipher
        card_row = row_for(source_row)
        if "inversion" in source_row or "ssim" in source_row:
            inversion = {**source_row.get("inversion", {}), **source_row}
            card_row.attacks["inversion"] = _pick(inversion, ("ssim", "psnr", "recognisability"))
        leakage = {
            name: source_row[name] for name in ("mine", "infonce", "smile") if name in source_row
        }
        if leakage:
            card_row.attacks["leakage_nats"] = leakage
    for source_row in _rows(sources.get("model_inversion")):
        mode = str(source_row.get("mode", "white_box")).replace("-", "_").replace(" ", "_")
        row_for(source_row).attacks[f"model_inversion_{mode}"] = _pick(
            source_row,
            ("queries", "ssim_to_class_mean", "recognisability", "noise_recognisability"),
        )
    return sorted(rows.values(), key=lambda row: (row.setting.image_size, row.setting.label()))


def jigsaw_rows(sources: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every strong-jigsaw result in the shape of jigsaw_strong's rows: its own, the group
    sweep's, and each frontier trial's attack on its validation ciphertexts."""
    rows = list(_rows(sources.get("jigsaw")))
    sweep = sources.get("jigsaw_groups") or {}
    for row in _rows(sweep):
        rows.append(
            {
                "cipher": "disposable",
                "params": {"group": row["group"], "window": 0},
                "block_size": sweep.get("block_size", 4),
                "image_size": sweep.get("image_size", 32),
                "configuration": f"group sweep, {row['images']} test images",
                "strong": row["scores"],
            }
        )
    for name in ("frontier", "frontier_rf_15_epochs"):
        for trial in (sources.get(name) or {}).get("trials", []):
            config = trial["config"]
            rows.append(
                {
                    "cipher": config["cipher"],
                    "params": {"group": config["group"], "window": config["window"]},
                    "block_size": config["block_size"],
                    "image_size": config["image_size"],
                    "configuration": f"{name} trial {trial['label']}, validation images",
                    "strong": {
                        "direct": trial["attack_direct"],
                        "neighbour": trial["attack_neighbour"],
                        "ssim": trial["attack_ssim"],
                    },
                }
            )
    return rows


def strongest_solver(source_row: Mapping[str, Any]) -> dict[str, Any] | None:
    """Of the jigsaw solvers a row reports, the one that put most blocks back."""
    solvers = source_row.get("solvers") or {
        name: value
        for name, value in source_row.items()
        if isinstance(value, Mapping) and "direct" in value and name != "ciphertext"
    }
    best_name, best = None, None
    for name, result in solvers.items():
        if best is None or _mean(result.get("direct")) > _mean(best.get("direct")):
            best_name, best = name, result
    if best is None:
        return None
    picked = {
        key: _mean(best.get(key))
        for key in ("direct", "neighbour", "largest_component", "ssim", "psnr")
        if key in best
    }
    data = source_row.get("configuration")
    return {"solver": best_name, **picked, **({"data": data} if data else {})}


def _rows(source: Mapping[str, Any] | None) -> Iterable[Mapping[str, Any]]:
    return [] if source is None else source.get("rows", [])


def _mean(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) else float("-inf")


def _pick(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: values[name] for name in names if name in values}


def provenance_of_sources(sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        category: {key: source.get(key) for key in ("command", "commit", "machine", "date")}
        for category, source in sources.items()
    }


def render_markdown(card: Mapping[str, Any]) -> str:
    """The card as a Markdown table, one row per setting, '–' where nothing was measured."""
    lines = [
        "# Audit card: accuracy next to the strongest attack in each category",
        "",
        f"- command: `{card['command']}`",
        f"- commit: `{card['commit']}`",
        f"- machine: {card['machine']}",
        f"- date: {card['date']}",
        "",
        "Sources (each with its own provenance in the JSON): "
        + ", ".join(f"`{name}`" for name in card["sources"])
        + ". A privacy number is the result of the strongest attack we have, never a key-space "
        "size. Accuracy is the paper table's (own key / fresh key, CIFAR-10 subset); '–' means "
        "not measured.",
        "",
        "| setting | px/block | accuracy own / fresh | jigsaw blocks back | jigsaw SSIM | linkage "
        "rank-1 | known-plaintext images exact | in-block key SSIM | inversion SSIM | "
        "inversion recognisable | MI (nats, InfoNCE) | model inversion SSIM to class mean "
        "(white box) | best reconstruction SSIM |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in card["rows"]:
        accuracy = row.get("accuracy") or {}
        jigsaw = row.get("jigsaw") or {}
        leakage = (row.get("leakage_nats") or {}).get("infonce")
        strongest = row.get("strongest_reconstruction") or {}
        setting = row["cipher"] + (
            "(" + ", ".join(f"{k}={v}" for k, v in row["params"].items()) + ")"
            if row["params"]
            else ""
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    setting,
                    f"{row['image_size']}/{row['block_size']}",
                    _accuracy_text(accuracy),
                    _percent(jigsaw.get("direct")),
                    _number(jigsaw.get("ssim")),
                    _percent((row.get("linkage") or {}).get("rank1")),
                    _percent((row.get("known_plaintext") or {}).get("images_exact")),
                    _number((row.get("in_block_key") or {}).get("ssim")),
                    _number((row.get("inversion") or {}).get("ssim")),
                    _percent((row.get("inversion") or {}).get("recognisability")),
                    _number(leakage.get("mean") if isinstance(leakage, Mapping) else leakage),
                    _number((row.get("model_inversion_white_box") or {}).get("ssim_to_class_mean")),
                    (f"{strongest['ssim']:.2f} ({strongest['attack']})" if strongest else "–"),
                ]
            )
            + " |"
        )
    if card.get("picture_rows"):
        lines += ["", "Picture rows (plain / ciphertext / strongest jigsaw), top to bottom:"]
        lines += [f"- {title}" for title in card["picture_rows"]]
    return "\n".join(lines) + "\n"


def _accuracy_text(accuracy: Mapping[str, Any]) -> str:
    if not accuracy:
        return "–"
    return (
        f"{_percent(accuracy.get('own_key'))} / {_percent(accuracy.get('fresh_key'))} "
        f"({accuracy.get('epochs')} ep."
        f"{', validation' if 'validation' in str(accuracy.get('source')) else ''})"
    )


def _percent(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, int | float) else "–"


def _number(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) else "–"
