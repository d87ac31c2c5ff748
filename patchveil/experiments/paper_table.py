"""The seed paper's table on our stack: one model per row, same budget, same tenant split.

Run: `patchveil experiment paper-table --epochs 10` (or `python bench/paper_table.py ...`).
Writes bench/results/paper_table.{md,json,png} with the command, commit, machine and date.

The experiment plays every tenant (it generates each tenant's key and encrypts that tenant's
share of the training images), then trains the platform's model on the ciphertexts with the same
loop Ray Train runs (`patchveil.models.training`), in one process so that rows are comparable.
Test images are never used for any choice: per-epoch validation uses a held-out 10% of each
tenant's training share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchveil.experiments.options import add_paper_table_arguments
from patchveil.models.augment import AugmentConfig
from patchveil.models.training import (
    TrainConfig,
    accuracy,
    build_optimizer,
    in_memory_batches,
    pick_device,
    train_one_epoch,
    warmup_cosine,
)
from patchveil.models.vit import ModelSpec, create_vit_from_spec
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.augment import augment_variant
from patchveil.tenants.ciphers import create_cipher, key_space_bits
from patchveil.tenants.ciphers.base import Cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import LabeledImages, default_cifar_dir, load_cifar
from patchveil.tenants.split import holdout_split, split_among_tenants


@dataclass(frozen=True)
class Row:
    """One line of the table: a cipher, how keys are shared, and the model that learns it."""

    name: str
    cipher: str
    variant: str
    keys: str  # "independent", "shared"
    params: tuple[tuple[str, Any], ...] = ()
    # The model variant's own parameters (e.g. `invariance_group`, `position_window`).
    model_params: tuple[tuple[str, Any], ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # The tenant crops/flips its plain images before encrypting: a new variant every epoch
    # (what onboarding with --augment-variants K stores, one variant drawn per epoch).
    tenant_augmentation: bool = False
    note: str = ""


ROWS = (
    Row("plain", "plain", "standard", "shared", note="upper reference"),
    Row(
        "plain_position_free",
        "plain",
        "position_free",
        "shared",
        note="cost of no position embedding",
    ),
    Row(
        "conventional_shared_key", "conventional", "standard", "shared", note="needs key management"
    ),
    Row(
        "conventional_independent_keys",
        "conventional",
        "standard",
        "independent",
        note="the failure the paper fixes",
    ),
    Row(
        "restricted_independent_keys",
        "restricted",
        "standard",
        "independent",
        note="key-management-free family",
    ),
    Row(
        "invariant_independent_keys",
        "invariant",
        "position_free",
        "independent",
        note="full BS + restricted PS/NP",
    ),
    Row(
        "disposable_keys",
        "disposable",
        "invariant",
        "independent",
        params=(("group", "np_cs"),),
        model_params=(("invariance_group", "np_cs"),),
        note="fresh key per image: block order + per-block NP and CS; orbit-invariant embedding",
    ),
    Row(
        "disposable_keys_rf",
        "disposable",
        "invariant",
        "independent",
        params=(("group", "rf"),),
        model_params=(("invariance_group", "rf"),),
        note="fresh key per image: block order + per-block rotation/flip; orbit-invariant embedding",
    ),
    Row(
        "disposable_keys_block_order",
        "disposable",
        "position_free",
        "independent",
        params=(("group", "none"),),
        note="fresh key per image: block order only (jigsaw); position-free ViT",
    ),
    Row(
        "disposable_keys_block_order_mixup",
        "disposable",
        "position_free",
        "independent",
        params=(("group", "none"),),
        augment=AugmentConfig(mixup_alpha=0.2),
        note="block order only, mixup (alpha 0.2) within each tenant's key",
    ),
    Row(
        "disposable_keys_block_order_block_cutmix",
        "disposable",
        "position_free",
        "independent",
        params=(("group", "none"),),
        augment=AugmentConfig(block_cutmix_prob=0.5),
        note="block order only, block-granular cutmix (p 0.5) within each tenant's key",
    ),
    Row(
        "disposable_keys_window_4_block_cutmix",
        "disposable",
        "window_position",
        "independent",
        params=(("group", "none"), ("window", 4)),
        model_params=(("position_window", 4),),
        augment=AugmentConfig(block_cutmix_prob=0.5),
        note="fresh block order per image inside each 4x4-block window (the quadrant a block "
        "is in stays visible); one position per window; block cutmix",
    ),
    Row(
        "disposable_keys_window_4_rf_block_cutmix",
        "disposable",
        "window_position",
        "independent",
        params=(("group", "rf"), ("window", 4)),
        model_params=(("position_window", 4), ("invariance_group", "rf")),
        augment=AugmentConfig(block_cutmix_prob=0.5),
        note="window 4 plus a fresh rotation/flip per block; orbit-invariant embedding; "
        "block cutmix",
    ),
    Row(
        "disposable_keys_window_2_block_cutmix",
        "disposable",
        "window_position",
        "independent",
        params=(("group", "none"), ("window", 2)),
        model_params=(("position_window", 2),),
        augment=AugmentConfig(block_cutmix_prob=0.5),
        note="fresh block order per image inside each 2x2-block window (8x8-pixel layout "
        "visible); one position per window; block cutmix",
    ),
    Row(
        "plain_block_cutmix",
        "plain",
        "standard",
        "shared",
        augment=AugmentConfig(block_cutmix_prob=0.5),
        note="upper reference with the same block cutmix (p 0.5)",
    ),
    Row(
        "plain_tenant_augmentation",
        "plain",
        "standard",
        "shared",
        tenant_augmentation=True,
        note="upper reference with the same crop/flip augmentation",
    ),
    Row(
        "disposable_keys_block_order_tenant_augmentation",
        "disposable",
        "position_free",
        "independent",
        params=(("group", "none"),),
        tenant_augmentation=True,
        note="block order only, tenant-side crop/flip before encryption",
    ),
)


@dataclass
class TenantShare:
    tenant_id: str
    cipher: Cipher
    train: LabeledImages
    validation: LabeledImages
    test: LabeledImages
    nonce_base: int


def encrypt(cipher: Cipher, images: np.ndarray, nonce_base: int) -> np.ndarray:
    """Encrypt as the tenant does; per-image ciphers get distinct nonces."""
    nonces = nonce_base + np.arange(len(images), dtype=np.int64)
    return cipher.encrypt(images, nonces if cipher.per_image else None)


def make_keys(row: Row, tenants: int, block_size: int, image_size: int) -> list[Cipher]:
    """One cipher per tenant plus one fresh key (the last), as the row's key policy says."""
    spec = CipherSpec(row.cipher, block_size, image_size, row.params)
    if row.keys == "shared":
        shared = create_cipher(Key.generate("shared", spec))
        return [shared] * tenants + [create_cipher(Key.generate("fresh", spec))]
    return [create_cipher(Key.generate(f"tenant-{t}", spec)) for t in range(tenants + 1)]


def run_row(
    row: Row,
    shares: list[tuple[LabeledImages, LabeledImages, LabeledImages]],
    test: LabeledImages,
    args: argparse.Namespace,
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    image_size = test.images.shape[1]
    ciphers = make_keys(row, len(shares), args.block_size, image_size)
    fresh = ciphers[-1]
    # Each tenant encrypts its own share (training, validation, test) with its own key.
    train_images, train_labels, groups, validation = [], [], [], []
    for index, ((train, held_out, _tenant_test), cipher) in enumerate(
        zip(shares, ciphers, strict=False)
    ):
        base = 10_000_000 * (index + 1)
        train_images.append(encrypt(cipher, train.images, base))
        train_labels.append(train.labels)
        groups.append(np.full(len(train), index))
        validation.append((encrypt(cipher, held_out.images, base + 1_000_000), held_out.labels))
    images = np.concatenate(train_images)
    labels = np.concatenate(train_labels)
    group = np.concatenate(groups)

    spec = ModelSpec(
        variant=row.variant,
        size=args.size,
        image_size=image_size,
        patch_size=args.block_size,
        num_classes=10,
        params=row.model_params,
    )
    model = create_vit_from_spec(spec)
    device = pick_device(args.gpu)
    model.to(device)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, augment=row.augment
    )
    optimizer = build_optimizer(model, config)
    steps = -(-len(images) // config.batch_size)
    scheduler = warmup_cosine(optimizer, steps * config.epochs, int(steps * config.warmup_epochs))
    numpy_generator = np.random.default_rng(args.seed)
    torch_generator = torch.Generator().manual_seed(args.seed)
    history = []
    start = time.perf_counter()
    for epoch in range(config.epochs):
        if row.tenant_augmentation and epoch > 0:
            images = np.concatenate(
                [
                    encrypt(
                        cipher,
                        augment_variant(
                            train.images, np.arange(len(train)), epoch, args.seed + index
                        ),
                        10_000_000 * (index + 1) + 100_000 * epoch,
                    )
                    for index, ((train, _, _), cipher) in enumerate(
                        zip(shares, ciphers, strict=False)
                    )
                ]
            )
        stats = train_one_epoch(
            model,
            in_memory_batches(images, labels, group, config.batch_size, numpy_generator),
            optimizer,
            scheduler,
            config,
            10,
            args.block_size,
            device,
            torch_generator,
        )
        validation_accuracy = float(np.mean([accuracy(model, x, y, device) for x, y in validation]))
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": stats.loss,
                "validation_accuracy": validation_accuracy,
            }
        )
        print(
            f"  [{row.name}] epoch {epoch + 1}/{config.epochs} loss {stats.loss:.3f} "
            f"validation {validation_accuracy:.3f} ({stats.seconds:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    tenant_count = len(shares)
    own, cross = [], []
    for index, (_, _, tenant_test) in enumerate(shares):
        base = 50_000_000 * (index + 1)
        own.append(
            accuracy(
                model, encrypt(ciphers[index], tenant_test.images, base), tenant_test.labels, device
            )
        )
        neighbour = ciphers[(index + 1) % tenant_count]
        cross.append(
            accuracy(
                model, encrypt(neighbour, tenant_test.images, base + 1), tenant_test.labels, device
            )
        )
    return {
        "name": row.name,
        "cipher": row.cipher,
        "params": dict(row.params),
        "model_variant": row.variant,
        "keys": row.keys,
        "note": row.note,
        "tenant_augmentation": row.tenant_augmentation,
        "own_key_accuracy": float(np.mean(own)),
        "fresh_key_accuracy": accuracy(
            model, encrypt(fresh, test.images, 90_000_000), test.labels, device
        ),
        "plain_accuracy": accuracy(model, test.images, test.labels, device),
        "cross_tenant_accuracy": float(np.mean(cross)),
        "key_space_bits": key_space_bits(
            CipherSpec(row.cipher, args.block_size, image_size, row.params)
        ),
        "train_seconds": train_seconds,
        "history": history,
    }


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Paper table: one shared ViT, tenants with their own keys",
        "",
        provenance_markdown(payload),
        f"Data: {payload['data']}. Budget: {payload['epochs']} epochs, model size "
        f"`{payload['size']}`, block = patch size {payload['block_size']}, batch "
        f"{payload['batch_size']}, seed {payload['seed']}, no augmentation unless the row says.",
        "Rows run in one process with the training loop Ray Train runs (`patchveil.models.training`).",
        "",
        "| row | cipher | model | own key | fresh key | plain | cross-tenant | validation | "
        "key space (bits) | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["rows"]:
        lines.append(
            f"| {row['name']} | {row['cipher']} | {row['model_variant']} | "
            f"{100 * row['own_key_accuracy']:.1f}% | {100 * row['fresh_key_accuracy']:.1f}% | "
            f"{100 * row['plain_accuracy']:.1f}% | {100 * row['cross_tenant_accuracy']:.1f}% | "
            f"{100 * validation_accuracy(row):.1f}% | "
            f"{row['key_space_bits']:.0f} | {row['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Own key: each tenant's test images under its own key (mean over tenants). Fresh key: the",
        "test images under a key made after training (a new tenant, or a rotated key, without",
        "retraining). Cross-tenant: tenant t's test images under tenant t+1's key. Key space",
        "counts distinct transforms and is not a security claim. Validation: the last epoch's",
        "accuracy on the held-out 10% of the tenants' training shares, each under its own key",
        "(what a choice between rows may look at; the test columns are reported, not tuned on).",
    ]
    if payload.get("pending"):
        lines += ["", f"**Partial run**: rows still to run: {', '.join(payload['pending'])}."]
    if payload.get("goal"):
        lines += [
            "",
            "Goal check (issue #5): own key >= 95% of the plain reference AND fresh key >= 95% "
            "of own key.",
            "",
            "| row | reference | own / plain (test) | fresh / own (test) | own / plain "
            "(validation) | met |",
            "|---|---|---:|---:|---:|---|",
        ]
        for check in payload["goal"]:
            lines.append(
                f"| {check['row']} | {check['reference']} | "
                f"{100 * check['own_over_plain']:.1f}% | {100 * check['fresh_over_own']:.1f}% | "
                f"{100 * check['validation_own_over_plain']:.1f}% | "
                f"{'yes' if check['met'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def chart(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    names = [row["name"] for row in rows]
    metrics = [
        ("own_key_accuracy", "own key"),
        ("fresh_key_accuracy", "fresh key"),
        ("plain_accuracy", "plain"),
    ]
    positions = np.arange(len(rows))
    figure, axes = plt.subplots(figsize=(11, 4.5))
    for offset, (metric, label) in enumerate(metrics):
        axes.bar(
            positions + (offset - 1) * 0.27, [100 * row[metric] for row in rows], 0.27, label=label
        )
    axes.set_xticks(positions, names, rotation=25, ha="right", fontsize=8)
    axes.set_ylabel("test accuracy (%)")
    axes.axhline(10, color="grey", linestyle=":", linewidth=1)
    axes.set_title(
        f"{payload['epochs']} epochs, {payload['size']} ViT, commit {payload['commit'][:10]}"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


SETTINGS = ("epochs", "size", "block_size", "batch_size", "seed", "tenants", "limit")


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SETTINGS}


def finished_rows(path: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Rows of an earlier run with the same settings, to resume a long table after a stop."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get("settings") != settings_of(args):
        sys.exit(
            f"paper_table: {path} was run with other settings ({earlier.get('settings')}); "
            "pass another --name or leave out --resume"
        )
    return {row["name"]: row for row in earlier["rows"]}


def validation_accuracy(row: dict[str, Any]) -> float:
    """The last epoch's mean held-out validation accuracy (each tenant under its own key)."""
    return float(row["history"][-1]["validation_accuracy"])


def render(args: argparse.Namespace) -> dict[str, Any]:
    """Rewrite the Markdown, goal check and chart of an earlier run from its JSON."""
    path = args.out / f"{args.name}.json"
    if not path.exists():
        sys.exit(f"paper_table: nothing to render: {path} does not exist")
    payload = json.loads(path.read_text())
    payload["goal"] = goal_check(payload["rows"])
    write_json(path, payload)
    write_text(args.out / f"{args.name}.md", markdown(payload))
    chart(payload, args.out / f"{args.name}.png")
    print(markdown(payload))
    return payload


def goal_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goal for each key-management-free row, against each plain reference run."""
    references = [row for row in rows if row["cipher"] == "plain"]
    checks = []
    for row in rows:
        if row["keys"] != "independent":
            continue
        own, fresh = row["own_key_accuracy"], row["fresh_key_accuracy"]
        for reference in references:
            own_ratio = own / reference["own_key_accuracy"]
            fresh_ratio = fresh / own if own else 0.0
            checks.append(
                {
                    "row": row["name"],
                    "reference": reference["name"],
                    "own_over_plain": own_ratio,
                    "validation_own_over_plain": validation_accuracy(row)
                    / validation_accuracy(reference),
                    "fresh_over_own": fresh_ratio,
                    "met": own_ratio >= 0.95 and fresh_ratio >= 0.95,
                }
            )
    return checks


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = args.data or default_cifar_dir()
    if folder is None:
        sys.exit("paper_table: no CIFAR-10 folder found; pass --data DIR")
    unknown = sorted(set(args.rows or ()) - {row.name for row in ROWS})
    if unknown:
        sys.exit(f"paper_table: unknown rows {unknown}; rows are {[row.name for row in ROWS]}")
    json_path = args.out / f"{args.name}.json"
    done = finished_rows(json_path, args) if args.resume else {}
    train_all = load_cifar(folder, "train")
    test = load_cifar(folder, "test")
    if args.limit:
        train_all = train_all.subset(np.arange(min(args.limit, len(train_all))))
    tenant_ids = [f"tenant-{t}" for t in range(args.tenants)]
    parts = split_among_tenants(train_all, tenant_ids, None, args.seed)
    test_parts = split_among_tenants(test, tenant_ids, None, args.seed + 1)
    shares = []
    for tenant_id in tenant_ids:
        train, held_out = holdout_split(parts[tenant_id], 0.1, args.seed)
        shares.append((train, held_out, test_parts[tenant_id]))
    rows = [row for row in ROWS if not args.rows or row.name in args.rows]
    # The key-management-free rows run first (they are what a long run is waiting to learn);
    # the table lists rows in the order of ROWS. After every row the outputs are rewritten, so
    # a stopped run keeps what it finished and `--resume` runs only the rest.
    results_by_name = {row.name: done[row.name] for row in rows if row.name in done}
    data = (
        f"CIFAR-10 at {folder.name}: {len(train_all)} training images split IID over "
        f"{args.tenants} tenants (10% of each held out for validation), {len(test)} test images"
    )
    payload: dict[str, Any] = {}
    for row in sorted(rows, key=lambda row: row.cipher != "disposable"):
        if row.name in results_by_name:
            print(f"row {row.name}: kept from {json_path}", flush=True)
            continue
        print(f"row {row.name}: {row.cipher} / {row.variant} / {row.keys} keys", flush=True)
        result = run_row(row, shares, test, args)
        results_by_name[row.name] = {**result, **provenance()}
        payload = save(args, data, rows, results_by_name)
    if not payload:
        payload = save(args, data, rows, results_by_name)
    print(markdown(payload))
    return payload


def save(
    args: argparse.Namespace,
    data: str,
    rows: list[Row],
    results_by_name: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    results = [results_by_name[row.name] for row in rows if row.name in results_by_name]
    payload = {
        **provenance(),
        "data": data,
        **{name: getattr(args, name) for name in ("epochs", "size", "block_size", "batch_size")},
        "seed": args.seed,
        "settings": settings_of(args),
        "pending": [row.name for row in rows if row.name not in results_by_name],
        "rows": results,
        "goal": goal_check(results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", payload)
    write_text(args.out / f"{args.name}.md", markdown(payload))
    chart(payload, args.out / f"{args.name}.png")
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_paper_table_arguments(parser)
    args = parser.parse_args(argv)
    return render(args) if args.render else run(args)


if __name__ == "__main__":
    main()
