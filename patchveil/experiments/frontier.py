"""The privacy frontier: Ray Tune maps accuracy against the strongest attack's measured success.

Run: `patchveil tune --trials 10 --train-images 2400 --epochs 4` (or `python bench/frontier.py
...`). Writes bench/results/frontier.{md,json,png} with the command, commit, machine and date.

The experimenter's role, like the paper table: `FrontierExperiment` plays the tenants (for each
trial it generates every tenant's key of the trial's cipher and encrypts that tenant's share of
the images, and a key made after training for the fresh-key column) and the auditor (it runs the
strongest ciphertext-only jigsaw, `patchveil.audit.jigsaw_mgc`, on the trial's *validation*
ciphertexts and scores the reconstructions against its plain copies; known-image linkage against
a gallery of plain images). `patchveil.tune` receives only the ciphertext datasets and these
callables' numbers: it never imports a cipher. Keys live only inside one `prepare` call. Test
images are never used: the search and every column here are on held-out validation images.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.experiments.options import AFFORDABLE_GROUPS, RESULTS, add_frontier_arguments
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tune.driver import (
    TrialRecord,
    TuneSettings,
    population_for,
    run_configs,
    tune_frontier,
)
from patchveil.tune.objectives import (
    NEIGHBOUR_LIMIT,
    SSIM_LIMIT,
    choose_default,
    frontier_mask,
)
from patchveil.tune.space import SearchSpace, TrialConfig, start_point
from patchveil.tune.trial import TrialData

#: Nonce bases: every tenant, split and the fresh key draw from their own range.
_TENANT_NONCES = 10_000_000
_VALIDATION_OFFSET = 1_000_000
_FRESH_NONCES = 90_000_000


@dataclass(frozen=True)
class FrontierData:
    """Which images a trial sees: the first `train_images + validation_images` of a seeded
    permutation of the training split, dealt round-robin to `tenants` tenants."""

    data_dir: str
    train_images: int = 2400
    validation_images: int = 480
    tenants: int = 2
    gallery_images: int = 1000
    seed: int = 0


@functools.lru_cache(maxsize=2)
def _plain_split(data: FrontierData) -> tuple[np.ndarray, ...]:
    """(train images, train labels, validation images, validation labels), cached per process
    (each Tune trial actor loads the data once from disk, not through Ray's object store)."""
    from patchveil.tenants.loaders import load_source

    source = load_source(data.data_dir, "train")
    needed = data.train_images + data.validation_images
    if needed > len(source.images):
        raise SystemExit(
            f"frontier: {needed} images asked for, {data.data_dir} holds {len(source.images)}"
        )
    order = np.random.default_rng(data.seed).permutation(len(source.images))[:needed]
    images, labels = source.images[order], source.labels[order].astype(np.int64)
    cut = data.train_images
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def _encrypt(cipher: Any, images: np.ndarray, nonce_base: int) -> np.ndarray:
    nonces = nonce_base + np.arange(len(images), dtype=np.int64)
    return cipher.encrypt(images, nonces if cipher.per_image else None)


@dataclass(frozen=True)
class FrontierExperiment:
    """The tenant and auditor side of every trial (see the module docstring). Holds settings
    only, so Tune ships no image and no key to its trial actors."""

    data: FrontierData

    def prepare(self, config: TrialConfig) -> TrialData:
        from patchveil.tenants.ciphers import create_cipher
        from patchveil.tenants.keys import CipherSpec, Key

        train, train_labels, validation, validation_labels = _plain_split(self.data)
        spec = CipherSpec(
            config.cipher,
            config.block_size,
            config.image_size,
            tuple(sorted(config.cipher_params.items())),
        )
        tenants = self.data.tenants
        train_owner = np.arange(len(train)) % tenants
        validation_owner = np.arange(len(validation)) % tenants
        train_out = np.empty_like(train)
        validation_out = np.empty_like(validation)
        for tenant in range(tenants):
            cipher = create_cipher(Key.generate(f"tenant-{tenant}", spec))
            base = _TENANT_NONCES * (tenant + 1)
            rows = train_owner == tenant
            train_out[rows] = _encrypt(cipher, train[rows], base)
            rows = validation_owner == tenant
            validation_out[rows] = _encrypt(cipher, validation[rows], base + _VALIDATION_OFFSET)
        # A key made after training: a new tenant, or a rotated key, on the same images.
        fresh = create_cipher(Key.generate("fresh", spec))
        return TrialData(
            train_images=train_out,
            train_labels=train_labels,
            train_groups=train_owner,
            validation_images=validation_out,
            validation_labels=validation_labels,
            fresh_images=_encrypt(fresh, validation, _FRESH_NONCES),
            fresh_labels=validation_labels,
        )

    def attack(self, config: TrialConfig, validation_ciphertexts: np.ndarray) -> dict[str, float]:
        """The strongest ciphertext-only jigsaw (window- and group-aware, public parameters
        only) and known-image linkage, scored against the auditor's plain validation copies."""
        from patchveil.audit.jigsaw_mgc import reconstruct
        from patchveil.audit.linkage import invariant_of, link_images
        from patchveil.audit.scoring import score_reconstructions

        train, _, validation, _ = _plain_split(self.data)
        count = len(validation_ciphertexts)
        plain = validation[:count]
        reconstructed = reconstruct(
            validation_ciphertexts, config.block_size, config.window, config.group
        )
        scores = score_reconstructions(plain, reconstructed, config.block_size, config.group)
        # The gallery: the queried images first, then other images of the same kind.
        gallery = np.concatenate([validation, train])[: max(self.data.gallery_images, count)]
        invariant, window = invariant_of(config.cipher, config.cipher_params)
        linkage = link_images(
            gallery, validation_ciphertexts, np.arange(count), config.block_size, invariant, window
        )
        return {
            "attack_ssim": scores.summary("ssim").mean,
            "attack_neighbour": scores.summary("neighbour").mean,
            "attack_direct": scores.summary("direct").mean,
            "attack_ssim_median": scores.summary("ssim").median,
            "linkage_rank1": linkage.rank1,
        }


# -- assembling the results ----------------------------------------------------------------------


def preset_names(configs: Sequence[TrialConfig]) -> list[str]:
    """A readable, unique name per configuration (its label; `-2`, `-3` for repeats)."""
    seen: dict[str, int] = {}
    names = []
    for config in configs:
        base = f"disposable-{config.label}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def trial_rows(
    records: Sequence[TrialRecord], references: Sequence[TrialRecord]
) -> list[dict[str, Any]]:
    """One JSON row per measured trial, with its same-budget plain reference and the front."""
    plain = {
        _key(record.config): record.metrics.get("own_key_accuracy")
        for record in references
        if record.error is None
    }
    rows = []
    for record in records:
        if record.error is not None or "attack_ssim" not in record.metrics:
            continue
        metrics = record.metrics
        rows.append(
            {
                "label": record.config.label,
                "config": record.config.to_json(),
                "own_key_accuracy": metrics["own_key_accuracy"],
                "fresh_key_accuracy": metrics["fresh_key_accuracy"],
                "plain_accuracy": plain.get(_key(record.config.plain_reference())),
                "attack_ssim": metrics["attack_ssim"],
                "attack_ssim_median": metrics.get("attack_ssim_median"),
                "attack_neighbour": metrics["attack_neighbour"],
                "attack_direct": metrics["attack_direct"],
                "linkage_rank1": metrics["linkage_rank1"],
                "accuracy_objective": metrics["accuracy_objective"],
                "attack_objective": metrics["attack_objective"],
                "epochs_trained": record.epochs_trained,
                "stopped_early": record.stopped_early,
                "attack_seconds": metrics.get("attack_seconds"),
            }
        )
    # The front is drawn among trials trained for their whole budget: a trial stopped early
    # (ASHA, or a run stopped for time) is listed but neither on the front nor a preset.
    complete = [row for row in rows if not row["stopped_early"]]
    for row in rows:
        row["pareto"] = False
    for row, on_front in zip(complete, frontier_mask(complete), strict=True):
        row["pareto"] = on_front
    return rows


def _levers(config: TrialConfig) -> dict[str, str]:
    """The settings a reader compares trials by (the window and its positions count as one
    setting: the layout the cipher keeps and the model uses)."""
    layout = "whole image"
    if config.window:
        positions = "positions per window" if config.variant == "window_position" else "no position"
        layout = f"window {config.window}, {positions}"
    return {
        "layout": layout,
        "group": config.group,
        "orbit pool": config.orbit_pool if config.group != "none" else "–",
        "block": str(config.block_size),
        "depth × width": f"{config.depth}×{config.embed_dim}",
        "learning rate": f"{config.learning_rate:.1e}",
        "block cutmix": f"{config.block_cutmix:g}",
        "epochs": str(config.epochs),
    }


def lever_pairs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of measured trials that differ in exactly one setting: what changing it did to
    accuracy and to the strongest attack (positive deltas: the second trial is higher). Trials
    stopped early are left out: their accuracy is at another budget."""
    pairs = []
    rows = [row for row in rows if not row["stopped_early"]]
    for first_index, first in enumerate(rows):
        for second in rows[first_index + 1 :]:
            a = _levers(TrialConfig.from_json(first["config"]))
            b = _levers(TrialConfig.from_json(second["config"]))
            changed = [name for name in a if a[name] != b[name]]
            if len(changed) != 1:
                continue
            pairs.append(
                {
                    "lever": changed[0],
                    "from": a[changed[0]],
                    "to": b[changed[0]],
                    "trials": [first["label"], second["label"]],
                    "accuracy_delta": second["accuracy_objective"] - first["accuracy_objective"],
                    "ssim_delta": second["attack_ssim"] - first["attack_ssim"],
                    "neighbour_delta": second["attack_neighbour"] - first["attack_neighbour"],
                }
            )
    return pairs


def _key(config: TrialConfig) -> str:
    return repr(sorted(config.to_json().items()))


def presets_of(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """Every Pareto trial becomes a named preset; returns them and the default's name (the most
    accurate trial the strongest attack fails on, None when none qualifies)."""
    default_index = choose_default(rows)
    chosen = [i for i, row in enumerate(rows) if row["pareto"] or i == default_index]
    names = preset_names([TrialConfig.from_json(rows[i]["config"]) for i in chosen])
    presets = []
    default_name = None
    for index, name in zip(chosen, names, strict=True):
        row = rows[index]
        config = TrialConfig.from_json(row["config"])
        row["preset"] = name
        if index == default_index:
            default_name = name
        presets.append(
            {
                "name": name,
                "cipher": config.cipher,
                "block_size": config.block_size,
                "image_size": config.image_size,
                "params": config.cipher_params,
                "model": {
                    "variant": config.variant,
                    "params": dict(config.model_params),
                    "depth": config.depth,
                    "embed_dim": config.embed_dim,
                },
                "training": {
                    "learning_rate": config.learning_rate,
                    "block_cutmix": config.block_cutmix,
                    "epochs": config.epochs,
                },
                "measured": {
                    name: row[name]
                    for name in (
                        "own_key_accuracy",
                        "fresh_key_accuracy",
                        "plain_accuracy",
                        "attack_ssim",
                        "attack_neighbour",
                        "linkage_rank1",
                        "epochs_trained",
                    )
                },
                "default": index == default_index,
            }
        )
    return presets, default_name


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown(payload: dict[str, Any]) -> str:
    settings = payload["settings"]
    lines = [
        "# Privacy frontier: accuracy against the strongest attack (Ray Tune)",
        "",
        provenance_markdown(payload),
        *([f"**Note**: {payload['note']}.", ""] if payload.get("note") else []),
        *[
            f"Merged from `{prior['file']}` (commit {str(prior['commit'])[:10]}, "
            f"{prior['date']}, attack on {prior['attack_images']} images): "
            f"{', '.join(prior['trials'])}; its command: `{prior['command']}`."
            for prior in payload.get("merged", [])
        ],
        *([""] if payload.get("merged") else []),
        f"Data: {payload['data']}. Search: {settings['trials']} trials, OptunaSearch (NSGA-II, "
        f"population {settings['population_size']}) maximising min(own key, fresh key) "
        f"validation accuracy and minimising max(SSIM / {SSIM_LIMIT}, neighbour / "
        f"{NEIGHBOUR_LIMIT:.2f}) of the strongest jigsaw; ASHA (grace {settings['grace_period']}"
        f" epoch, reduction {settings['reduction_factor']}) stops trials on accuracy. Each trial "
        f"is a Ray Train run (`TorchTrainer`, {settings['num_workers']} workers, "
        f"{settings['cpus_per_trial']} CPUs per trial). Attack on the first "
        f"{settings['attack_images']} validation ciphertexts of each trial; linkage against a "
        f"gallery of {settings['gallery_images']} plain images.",
        "",
        "| trial | block | window | group | model | epochs | own key | fresh key | plain | "
        "attack SSIM | neighbour | direct | linkage rank-1 | Pareto | preset |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for index, row in enumerate(payload["trials"], 1):
        config = row["config"]
        epochs = f"{row['epochs_trained']}/{config['epochs']}"
        lines.append(
            f"| {index} | {config['block_size']} | {config['window'] or 'whole'} | "
            f"{config['group']} | {config['variant']} {config['depth']}×{config['embed_dim']}, "
            f"lr {config['learning_rate']:.1e}, cutmix {config['block_cutmix']} | {epochs} | "
            f"{_percent(row['own_key_accuracy'])} | {_percent(row['fresh_key_accuracy'])} | "
            f"{_percent(row['plain_accuracy'])} | {row['attack_ssim']:.2f} | "
            f"{_percent(row['attack_neighbour'])} | {_percent(row['attack_direct'])} | "
            f"{_percent(row['linkage_rank1'])} | {'yes' if row['pareto'] else ''} | "
            f"{row.get('preset') or ''} |"
        )
    default = payload["default_preset"]
    lines += [""]
    if default:
        row = next(row for row in payload["trials"] if row.get("preset") == default)
        lines.append(
            f"**Default preset: `{default}`**: the most accurate trial whose strongest attack "
            f"stays at SSIM ≤ {SSIM_LIMIT} and neighbour accuracy ≤ {NEIGHBOUR_LIMIT:.0%} "
            f"(own key {_percent(row['own_key_accuracy'])}, fresh key "
            f"{_percent(row['fresh_key_accuracy'])}, plain at the same budget "
            f"{_percent(row['plain_accuracy'])}; attack SSIM {row['attack_ssim']:.2f}, "
            f"neighbour {_percent(row['attack_neighbour'])})."
        )
    else:
        lines.append(
            f"**No default preset**: no trial kept the strongest attack at SSIM ≤ {SSIM_LIMIT} "
            f"and neighbour accuracy ≤ {NEIGHBOUR_LIMIT:.0%}."
        )
    if payload.get("levers"):
        lines += [
            "",
            "What each lever bought (pairs of trials that differ in one setting; accuracy is "
            "min(own, fresh) on validation, in points):",
            "",
            "| lever | from → to | accuracy | attack SSIM | neighbour |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {pair['lever']} | {pair['from']} → {pair['to']} | "
            f"{100 * pair['accuracy_delta']:+.1f} | {pair['ssim_delta']:+.2f} | "
            f"{100 * pair['neighbour_delta']:+.1f} |"
            for pair in payload["levers"]
        ]
    if payload.get("failed"):
        lines += ["", "Failed trials:"]
        lines += [f"- {failure['label']}: {failure['error']}" for failure in payload["failed"]]
    lines += [
        "",
        "Own key: validation images under each tenant's own key; fresh key: the same images under",
        "a key made after training; plain: a standard ViT on the same plain images with the same",
        "block size, depth, width and epochs (learning rate 1e-3, no cutmix). Linkage rank-1: how often a gallery",
        "of plain images ranks the ciphertext's source first (expected ~100% for every key-free",
        "cipher: the threat model says so). Epochs a/b: trained a of b (ASHA stopped it early).",
        "Every Pareto trial is a preset (`patchveil ciphers` lists them, `patchveil tenant onboard",
        "--preset NAME` uses one), read from this file.",
    ]
    return "\n".join(lines) + "\n"


def chart(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["trials"]
    figure, axes = plt.subplots(figsize=(7.5, 5))
    for on_front, colour, label in ((False, "#999999", "trial"), (True, "#c0392b", "Pareto")):
        chosen = [row for row in rows if row["pareto"] == on_front]
        axes.scatter(
            [row["attack_ssim"] for row in chosen],
            [100 * row["accuracy_objective"] for row in chosen],
            c=colour,
            label=label,
            zorder=3,
        )
    for row in rows:
        axes.annotate(
            row["label"], (row["attack_ssim"], 100 * row["accuracy_objective"]), fontsize=6
        )
    plain = [row["plain_accuracy"] for row in rows if row["plain_accuracy"] is not None]
    if plain:
        axes.axhline(100 * max(plain), color="grey", linestyle=":", label="plain (best budget)")
    axes.axvline(SSIM_LIMIT, color="black", linestyle="--", linewidth=1, label="SSIM bar")
    axes.set_xlabel("strongest jigsaw: SSIM of the reconstruction (lower is more private)")
    axes.set_ylabel("min(own key, fresh key) validation accuracy (%)")
    axes.set_title(f"privacy frontier, commit {payload['commit'][:10]}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- running it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontierOptions:
    """Everything a frontier run is asked for (the CLI, the flow and bench/frontier.py)."""

    trials: int = 10
    train_images: int = 2400
    validation_images: int = 480
    tenants: int = 2
    epochs: tuple[int, ...] = (4,)
    block_sizes: tuple[int, ...] = (4, 8)
    groups: tuple[str, ...] = AFFORDABLE_GROUPS
    depths: tuple[int, ...] = (6,)
    widths: tuple[int, ...] = (192,)
    learning_rate: tuple[float, float] = (5e-4, 2e-3)
    block_cutmix: tuple[float, ...] = (0.0, 0.5)
    size: str = "cpu"
    orbit_pools: tuple[str, ...] = ("mean",)
    start_with: tuple[str, ...] = ()
    grace_period: int = 1
    attack_images: int = 24
    gallery_images: int = 1000
    batch_size: int = 128
    workers: int = 0
    cpus: int = 2
    gpu: bool = False
    seed: int = 0
    data: str | None = None
    out: str = str(RESULTS)
    name: str = "frontier"
    storage: str | None = None


def search_of(
    options: FrontierOptions, image_size: int = 32
) -> tuple[SearchSpace, list[dict[str, Any]]]:
    """The search space and the start points the options ask for (PatchveilError if either is
    invalid: the CLI checks this before Prefect or Ray start)."""
    space = SearchSpace(
        image_size=image_size,
        block_sizes=options.block_sizes,
        groups=options.groups,
        depths=options.depths,
        widths=options.widths,
        learning_rate=options.learning_rate,
        block_cutmix=options.block_cutmix,
        epochs=options.epochs,
        size=options.size,
        orbit_pools=options.orbit_pools,
    )
    return space, [start_point(text, space) for text in options.start_with]


def tune_settings(options: FrontierOptions, storage: str) -> TuneSettings:
    return TuneSettings(
        storage_path=storage,
        num_workers=options.workers,
        cpus_per_trial=float(options.cpus),
        use_gpu=options.gpu,
        batch_size=options.batch_size,
        attack_images=options.attack_images,
        seed=options.seed,
        grace_period=options.grace_period,
    )


#: Numbers a published trial row carries back into a record when results are merged.
_ROW_METRICS = (
    "own_key_accuracy",
    "fresh_key_accuracy",
    "attack_ssim",
    "attack_ssim_median",
    "attack_neighbour",
    "attack_direct",
    "linkage_rank1",
    "accuracy_objective",
    "attack_objective",
    "attack_seconds",
)


@dataclass(frozen=True)
class PriorResults:
    """Trials and plain references an earlier run published, to be shown beside a new run's."""

    path: str
    records: tuple[TrialRecord, ...]
    references: tuple[TrialRecord, ...]
    about: dict[str, Any]


def prior_results(path: Path | str, data: str) -> PriorResults:
    """The trials of a published frontier file (`bench/results/frontier*.json`) as records. Its
    data must be the new run's (`data`, the payload's description of it): accuracies at another
    data budget are not comparable, so that is refused in one line."""
    import json

    try:
        payload = json.loads(Path(path).read_text())
        rows, references = payload["trials"], payload.get("references", [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"frontier: {path} is not a published frontier file ({error})") from None
    if payload.get("data") != data:
        raise SystemExit(
            f"frontier: {path} was measured on other data ({payload.get('data')!r}); "
            f"this run uses {data!r}"
        )
    records = tuple(
        TrialRecord(
            TrialConfig.from_json(row["config"]),
            {name: row[name] for name in _ROW_METRICS if row.get(name) is not None},
            int(row["epochs_trained"]),
        )
        for row in rows
    )
    plain = tuple(
        TrialRecord(
            TrialConfig.from_json(reference["config"]),
            {"own_key_accuracy": reference["plain_accuracy"]},
            int(reference["config"]["epochs"]),
            reference.get("error"),
        )
        for reference in references
    )
    about = {
        "file": Path(path).name,
        **{name: payload.get(name) for name in ("command", "commit", "machine", "date")},
        "trials": [record.config.label for record in records],
        "attack_images": payload.get("settings", {}).get("attack_images"),
    }
    return PriorResults(str(path), records, plain, about)


def without_repeats(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Records in order, each measurement once (a file merged twice, or a merged file that
    already holds trials of another merged one, repeats the same trial and numbers)."""
    seen, out = set(), []
    for record in records:
        key = (_key(record.config), repr(sorted(record.metrics.items())), record.epochs_trained)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def data_description(options: FrontierOptions, folder: str) -> str:
    return (
        f"CIFAR-10 training split at {Path(folder).name}: {options.train_images} training "
        f"and {options.validation_images} validation images dealt to {options.tenants} "
        "tenants (no test image)"
    )


def run_frontier(
    options: FrontierOptions,
    progress: Any = print,
    command: list[str] | None = None,
    merge: Sequence[str] = (),
) -> dict[str, Any]:
    """Search, run the plain references (those `merge`'s files do not already hold), choose the
    default among the new trials and the merged ones, write the three result files."""
    import ray

    from patchveil.tenants.loaders import default_cifar_dir

    folder = options.data or default_cifar_dir()
    if folder is None:
        raise SystemExit("frontier: no CIFAR-10 folder found; pass --data DIR")
    data = FrontierData(
        data_dir=str(folder),
        train_images=options.train_images,
        validation_images=options.validation_images,
        tenants=options.tenants,
        gallery_images=options.gallery_images,
        seed=options.seed,
    )
    space, start_with = search_of(options, int(_plain_split(data)[0].shape[1]))
    priors = [prior_results(path, data_description(options, str(folder))) for path in merge]
    experiment = FrontierExperiment(data)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=options.cpus, include_dashboard=False, log_to_driver=False)
    storage = options.storage or tempfile.mkdtemp(prefix="patchveil-frontier-")
    population = population_for(options.trials)
    settings = tune_settings(options, storage)
    try:
        progress(f"searching {options.trials} trials ({space.to_json()})")
        records = tune_frontier(
            experiment,
            space,
            settings,
            trials=options.trials,
            population_size=population,
            progress=progress,
            start_with=start_with,
        )
        known = [r for prior in priors for r in prior.references if r.error is None]
        have = {_key(r.config) for r in known}
        wanted = {
            _key(r.config.plain_reference()): r.config.plain_reference()
            for r in records
            if r.error is None and _key(r.config.plain_reference()) not in have
        }
        progress(f"plain references at the same budget: {len(wanted)} to train, {len(have)} merged")
        references = known + run_configs(
            experiment, list(wanted.values()), settings, progress=progress
        )
    finally:
        if started_here:
            ray.shutdown()
    merged = [r for prior in priors for r in prior.records]
    return publish(
        options,
        str(folder),
        space,
        settings,
        without_repeats([*records, *merged]),
        without_repeats(references),
        command,
        merged=[prior.about for prior in priors],
    )


def publish(
    options: FrontierOptions,
    folder: str,
    space: SearchSpace,
    settings: TuneSettings,
    records: Sequence[TrialRecord],
    references: Sequence[TrialRecord],
    command: list[str] | None = None,
    note: str | None = None,
    merged: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Rows, front, presets and levers of measured trials → the three result files. `merged`
    describes earlier runs whose trials are among `records` (file, command, commit, trials)."""
    population = population_for(options.trials)
    rows = trial_rows(records, references)
    presets, default_name = presets_of(rows)
    payload = {
        **provenance(command),
        **({"note": note} if note else {}),
        **({"merged": list(merged)} if merged else {}),
        "default_preset": default_name,
        "default_rule": (
            f"most accurate min(own key, fresh key) with attack SSIM <= {SSIM_LIMIT} and "
            f"neighbour <= {NEIGHBOUR_LIMIT}"
        ),
        "data": data_description(options, folder),
        "settings": {
            **{k: v for k, v in asdict(options).items() if k not in ("data", "out", "storage")},
            "population_size": population,
            "grace_period": settings.grace_period,
            "reduction_factor": settings.reduction_factor,
            "cpus_per_trial": settings.cpus_per_trial,
            "num_workers": settings.num_workers,
        },
        "search_space": space.to_json(),
        "trials": rows,
        "references": [
            {
                "config": record.config.to_json(),
                "plain_accuracy": record.metrics.get("own_key_accuracy"),
                "error": record.error,
            }
            for record in references
        ],
        "failed": [
            {"label": record.config.label, "error": record.error}
            for record in records
            if record.error is not None
        ],
        "presets": presets,
        "levers": lever_pairs(rows),
    }
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{options.name}.json", payload)
    write_text(out / f"{options.name}.md", markdown(payload))
    if rows:
        chart(payload, out / f"{options.name}.png")
    return payload


def records_from_storage(experiment: Path | str) -> list[TrialRecord]:
    """The trials of a Tune experiment folder as their last report left them (a run stopped
    before its end: finished trials whole, the running one at its last epoch)."""
    import json

    records = []
    for trial in sorted(Path(experiment).iterdir(), key=lambda path: path.stat().st_mtime):
        params, results = trial / "params.json", trial / "result.json"
        if not (params.is_file() and results.is_file()):
            continue
        lines = [line for line in results.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        last = json.loads(lines[-1])
        config = TrialConfig.from_json(json.loads(params.read_text())["trial"])
        metrics = {
            name: value
            for name, value in last.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        records.append(TrialRecord(config, metrics, int(last.get("epoch", 0))))
    if not records:
        raise SystemExit(f"frontier: no measured trial in {experiment}")
    return records


def options_of(args: argparse.Namespace) -> FrontierOptions:
    return FrontierOptions(
        trials=args.trials,
        train_images=args.train_images,
        validation_images=args.validation_images,
        tenants=args.tenants,
        epochs=tuple(args.epochs),
        block_sizes=tuple(args.block_sizes),
        groups=tuple(args.groups),
        depths=tuple(args.depths),
        widths=tuple(args.widths),
        learning_rate=(min(args.learning_rate), max(args.learning_rate)),
        block_cutmix=tuple(args.block_cutmix),
        size=args.size,
        orbit_pools=tuple(args.orbit_pools),
        start_with=tuple(args.start_with or ()),
        grace_period=args.grace_period,
        attack_images=args.attack_images,
        gallery_images=args.gallery_images,
        batch_size=args.batch_size,
        workers=args.workers,
        cpus=args.cpus,
        gpu=args.gpu,
        seed=args.seed,
        data=args.data,
        out=args.out,
        name=args.name,
        storage=args.storage,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_frontier_arguments(parser)
    parser.add_argument(
        "--from-storage",
        metavar="DIR",
        help="publish the trials a stopped run left in its Tune experiment folder (no search)",
    )
    parser.add_argument("--note", help="with --from-storage: how that run was started")
    parser.add_argument(
        "--merge",
        metavar="FILE",
        action="append",
        default=[],
        help="a published frontier file on the same data whose trials (and plain references) "
        "join this run's front and default choice (repeatable)",
    )
    args = parser.parse_args(argv)
    options = options_of(args)
    if args.from_storage:
        from patchveil.tenants.loaders import default_cifar_dir

        folder = str(options.data or default_cifar_dir())
        space, _ = search_of(options)
        note = (
            f"trials read from the Tune folder of a run stopped before its end "
            f"({Path(args.from_storage).name}); the options above are that run's; plain "
            "references only where that run reached them or a merged file holds them"
            + (f"; {args.note}" if args.note else "")
        )
        priors = [prior_results(path, data_description(options, folder)) for path in args.merge]
        records = records_from_storage(args.from_storage)
        payload = publish(
            options,
            folder,
            space,
            tune_settings(options, args.from_storage),
            without_repeats([*records, *(record for prior in priors for record in prior.records)]),
            without_repeats([record for prior in priors for record in prior.references]),
            note=note,
            merged=[prior.about for prior in priors],
        )
    else:
        payload = run_frontier(options, merge=args.merge)
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
