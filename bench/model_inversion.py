"""Model inversion of the shared ViT (Nakamura et al.), white-box and black-box, cipher by cipher.

    python bench/model_inversion.py [--epochs 3] [--train-images 2000] [--white-steps 60]
                                    [--query-budget 600] [--rows 2] [--threads 2]

For each row the platform's `cpu` ViT is trained in memory on one tenant's ciphertexts of the
first `--train-images` CIFAR train images (the loop of `patchveil.models.training`), then
inverted once per class: white-box (Adam on the input) and black-box (NES from label +
probability answers, at most `--query-budget` queries per class). An independent CNN trained
here on `--classifier-images` plain train images scores recognisability; SSIM is to the class mean of all plain
train images. Writes bench/results/model_inversion.{json,md}; sized for ≤ 12 minutes on 2 CPU
cores (the third row, disposable np_cs, with `--rows 3`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchveil.audit.embedding import accuracy as classifier_accuracy
from patchveil.audit.embedding import train_embedding_net
from patchveil.audit.model_inversion import audit_model_inversion
from patchveil.models.training import (
    TrainConfig,
    accuracy,
    build_optimizer,
    in_memory_batches,
    train_one_epoch,
    warmup_cosine,
)
from patchveil.models.vit import ModelSpec, create_vit_from_spec
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_source

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK_SIZE, IMAGE_SIZE = 4, 32
# The black-box attacker's NES settings: few directions per step, drawn per 4×4-pixel block.
BLACK_BOX_SETTINGS: dict[str, Any] = {"directions": 5, "tile": 4}


@dataclass(frozen=True)
class Row:
    """A cipher and the model variant the platform trains on its ciphertexts."""

    name: str
    cipher: CipherSpec
    variant: str
    model_params: tuple[tuple[str, Any], ...] = ()


ROWS = (
    Row("plain / standard", CipherSpec("plain", BLOCK_SIZE, IMAGE_SIZE), "standard"),
    Row(
        "disposable none window 4 / window_position",
        CipherSpec("disposable", BLOCK_SIZE, IMAGE_SIZE, (("group", "none"), ("window", 4))),
        "window_position",
        (("position_window", 4),),
    ),
    Row(
        "disposable np_cs window 0 / invariant",
        CipherSpec("disposable", BLOCK_SIZE, IMAGE_SIZE, (("group", "np_cs"), ("window", 0))),
        "invariant",
        (("invariance_group", "np_cs"),),
    ),
)


def encrypt_as_tenant(spec: CipherSpec, images: np.ndarray, nonce_base: int) -> np.ndarray:
    """One tenant's ciphertexts (a fresh nonce per image for per-image ciphers)."""
    cipher = create_cipher(Key.generate("tenant-0", spec))
    nonces = nonce_base + np.arange(len(images)) if cipher.per_image else None
    return cipher.encrypt(images, nonces)


def train_shared_model(
    row: Row, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int
) -> torch.nn.Module:
    """The platform's model, trained in memory on ciphertexts with the shared training loop."""
    torch.manual_seed(seed)
    spec = ModelSpec(row.variant, "cpu", IMAGE_SIZE, BLOCK_SIZE, 10, params=row.model_params)
    model = create_vit_from_spec(spec)
    config = TrainConfig(epochs=epochs, seed=seed)
    optimizer = build_optimizer(model, config)
    steps = -(-len(images) // config.batch_size)
    scheduler = warmup_cosine(optimizer, steps * epochs, int(steps * config.warmup_epochs))
    numpy_generator = np.random.default_rng(seed)
    torch_generator = torch.Generator().manual_seed(seed)
    groups = np.zeros(len(images), dtype=np.int64)
    for epoch in range(epochs):
        stats = train_one_epoch(
            model,
            in_memory_batches(images, labels, groups, config.batch_size, numpy_generator),
            optimizer, scheduler, config, 10, BLOCK_SIZE, torch.device("cpu"), torch_generator,
        )  # fmt: skip
        print(f"  [{row.name}] epoch {epoch + 1}: loss {stats.loss:.3f} ({stats.seconds:.0f} s)")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--classifier-images", type=int, default=4000)
    parser.add_argument("--white-steps", type=int, default=60)
    parser.add_argument("--black-steps", type=int, default=1000)
    parser.add_argument("--query-budget", type=int, default=600)
    parser.add_argument("--rows", type=int, default=2, help="run the first N rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="model_inversion")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    meta = provenance()
    source = default_cifar_dir()
    if source is None:
        raise SystemExit("no CIFAR-10 folder: set PATCHVEIL_CIFAR_DIR")
    train, test = load_source(source, "train"), load_source(source, "test")
    trained = train_embedding_net(
        train.images[: args.classifier_images], train.labels[: args.classifier_images], epochs=3
    )
    classifier = trained.model
    classifier_test = classifier_accuracy(classifier, test.images, test.labels)
    print(
        f"classifier: test accuracy {classifier_test:.1%} ({time.perf_counter() - started:.0f} s)"
    )

    rows: list[dict[str, Any]] = []
    for row in ROWS[: args.rows]:
        images = train.images[: args.train_images]
        labels = train.labels[: args.train_images]
        ciphertexts = encrypt_as_tenant(row.cipher, images, 1 << 20)
        model = train_shared_model(row, ciphertexts, labels, args.epochs, args.seed)
        test_accuracy = accuracy(
            model, encrypt_as_tenant(row.cipher, test.images, 1 << 30), test.labels,
            torch.device("cpu"),
        )  # fmt: skip
        modes = (
            ("white_box", args.white_steps, {}),
            ("black_box", args.black_steps, BLACK_BOX_SETTINGS),
        )
        for mode, steps, settings in modes:
            mode_started = time.perf_counter()
            result, _ = audit_model_inversion(
                model, row.cipher, train.images, train.labels, classifier, mode=mode,
                steps=steps, query_budget=args.query_budget, seed=args.seed, **settings,
            )  # fmt: skip
            rows.append(
                {
                    "row": row.name,
                    "model_variant": row.variant,
                    "model_test_accuracy": test_accuracy,
                    **result.to_json(),
                    "seconds": round(time.perf_counter() - mode_started, 1),
                }
            )
            print(f"{row.name} {mode}: {rows[-1]} ({time.perf_counter() - started:.0f} s)")

    payload = {
        **meta,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": args.threads,
        "epochs": args.epochs,
        "train_images": args.train_images,
        "white_steps": args.white_steps,
        "query_budget": args.query_budget,
        "black_box_settings": BLACK_BOX_SETTINGS,
        "classifier": trained.to_json(),
        "classifier_test_accuracy": classifier_test,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", payload)
    write_text(RESULTS / f"{args.name}.md", markdown(payload))
    print(markdown(payload))


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Model inversion of the shared model (Nakamura et al.)",
        "",
        provenance_markdown(payload),
        f"Shared model: `cpu` ViT trained {payload['epochs']} epochs on ciphertexts of "
        f"{payload['train_images']} CIFAR train images, 4-px blocks, 32-px images. One inverted "
        f"image per class: white-box {payload['white_steps']} Adam steps on the input; black-box "
        f"NES from the service's label + probabilities ({payload['black_box_settings']}), at most "
        f"{payload['query_budget']} queries per class. Independent CNN trained here on "
        f"{payload['classifier']['train_images']} plain train images (test accuracy "
        f"{payload['classifier_test_accuracy']:.1%}). Total {payload['seconds']:.0f} s on "
        f"{payload['threads']} threads.",
        "",
        "| row | model test acc. | mode | queries | p(target) | SSIM to class mean | arranged | "
        "noise SSIM (arranged) | recognisability | noise | class means |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["rows"]:
        lines.append(
            f"| {row['row']} | {row['model_test_accuracy']:.1%} | {row['mode']} | "
            f"{row['queries']} | {row['target_probability']:.2f} | "
            f"{row['ssim_to_class_mean']:.3f} | {row['ssim_to_class_mean_arranged']:.3f} | "
            f"{row['noise_ssim_to_class_mean']:.3f} ({row['noise_ssim_to_class_mean_arranged']:.3f}) | "
            f"{row['recognisability']:.0%} | {row['noise_recognisability']:.0%} | "
            f"{row['class_mean_recognisability']:.0%} |"
        )
    lines += [
        "",
        "Queries: forward–backward passes (white-box) or images sent to the service (black-box), "
        "all classes together. p(target): the shared model's mean probability of the target class "
        "on the inverted images. Arranged: SSIM after the block order inside the cipher's windows "
        "that best matches the class mean (the model cannot tell block orders apart, so an "
        "attacker may pick any; the match uses the class mean, so it is an upper bound, to be "
        "read against the arranged noise floor). Recognisability: accuracy of the independent "
        "CNN on the inverted images (target = label), beside noise (chance floor) and the class "
        "means (ceiling).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
