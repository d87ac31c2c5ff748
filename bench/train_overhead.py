"""Seconds per epoch through Ray Train (Ray Data from Parquet) beside a plain in-memory PyTorch loop.

Run: `.venv/bin/python bench/train_overhead.py [--size cpu] [--images 8192] [--epochs 3]`
Writes bench/results/train_overhead.{json,md}. Both sides train the same model (same spec, seed
and hyper-parameters) on the same ciphertext, in the same run: the plain loop from numpy arrays
in this process (`in_memory_batches` + `train_one_epoch`), Ray Train with one worker reading the
published Parquet version through Ray Data. The plain loop gets as many torch threads as the Ray
worker has CPUs, so the ratio measures Ray's overhead, not a difference in threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from patchveil.datasets import encrypted_batch_to_table, publish_version, version_uri, write_shard
from patchveil.models.ray_train import fit_shared_model
from patchveil.models.training import (
    TrainConfig,
    build_optimizer,
    in_memory_batches,
    pick_device,
    train_one_epoch,
    warmup_cosine,
)
from patchveil.models.vit import ModelSpec, available_sizes, create_vit_from_spec
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_cifar

RESULTS = Path(__file__).parent / "results"
BLOCK_SIZE = 4
CIPHER = "conventional"
DATASET = "overhead"


def load_images(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    folder = default_cifar_dir()
    if folder is not None:
        data = load_cifar(folder, "train")
        count = min(count, len(data.images))
        return data.images[:count], data.labels[:count], f"CIFAR-10 ({folder.name}), {count} images"
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return images, generator.integers(0, 10, count), f"random uint8 images, {count} (no CIFAR)"


def encrypt_for_tenants(
    images: np.ndarray, labels: np.ndarray, tenants: int, dataset_root: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Each tenant encrypts its slice with its own key; publish one version of train shards.

    Returns the ciphertext in the original image order, each image's tenant, and the version URI.
    """
    folder = version_uri(dataset_root, DATASET, 1)
    image_size = images.shape[1]
    ciphertext, groups, shards = [], [], []
    for tenant, rows in enumerate(np.array_split(np.arange(len(images)), tenants)):
        tenant_id = f"tenant-{tenant}"
        key = Key.generate(tenant_id, CipherSpec(CIPHER, BLOCK_SIZE, image_size))
        encrypted = np.ascontiguousarray(create_cipher(key).encrypt(images[rows]))
        table = encrypted_batch_to_table(
            encrypted,
            labels[rows],
            tenant_id=tenant_id,
            key_version=key.version,
            sample_ids=rows,
            cipher_name=CIPHER,
            block_size=BLOCK_SIZE,
            image_size=image_size,
        )
        shards.append(write_shard(table, folder, tenant_id))
        ciphertext.append(encrypted)
        groups.append(np.full(len(rows), tenant))
    published = publish_version(dataset_root, DATASET, 1, shards)
    return np.concatenate(ciphertext), np.concatenate(groups), published.uri


def plain_epochs(
    spec: ModelSpec,
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    device: torch.device,
) -> list[float]:
    """Seconds of each epoch of the single-process loop over in-memory arrays."""
    torch.manual_seed(config.seed)
    model = create_vit_from_spec(spec).to(device)
    optimizer = build_optimizer(model, config)
    steps = -(-len(images) // config.batch_size)
    scheduler = warmup_cosine(optimizer, steps * config.epochs, round(config.warmup_epochs * steps))
    seconds = []
    for epoch in range(1, config.epochs + 1):
        generator = np.random.default_rng(config.seed + epoch)
        batches = in_memory_batches(images, labels, groups, config.batch_size, generator)
        stats = train_one_epoch(
            model,
            batches,
            optimizer,
            scheduler,
            config,
            spec.num_classes,
            spec.patch_size,
            device,
            torch.Generator().manual_seed(epoch),
        )
        seconds.append(stats.seconds)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="cpu", choices=available_sizes())
    parser.add_argument("--variant", default="standard")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--cpus-per-worker",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="CPUs (torch threads) of the Ray worker and of the plain loop; one more goes to Ray Data",
    )
    parser.add_argument("--gpu", action="store_true", help="train both on the GPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import ray

    images, labels, source = load_images(args.images)
    spec = ModelSpec(
        variant=args.variant,
        size=args.size,
        image_size=images.shape[1],
        patch_size=BLOCK_SIZE,
        num_classes=int(labels.max()) + 1,
    )
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="patchveil-overhead-") as scratch:
        ciphertext, groups, dataset_uri = encrypt_for_tenants(
            images, labels, args.tenants, f"{scratch}/datasets"
        )
        torch.set_num_threads(args.cpus_per_worker)
        device = pick_device(args.gpu)
        plain = plain_epochs(spec, config, ciphertext, labels, groups, device)

        ray.init(
            num_cpus=args.cpus_per_worker + 1,
            num_gpus=1 if args.gpu else 0,
            include_dashboard=False,
            log_to_driver=False,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        start = time.perf_counter()
        result = fit_shared_model(
            dataset_uri,
            spec,
            config,
            storage_path=f"{scratch}/checkpoints",
            run_name="overhead",
            num_workers=1,
            use_gpu=args.gpu,
            cpus_per_worker=args.cpus_per_worker,
        )
        fit_seconds = time.perf_counter() - start
        ray.shutdown()
    through_ray = [float(epoch["epoch_seconds"]) for epoch in result.epochs]

    def steady(seconds: list[float]) -> float:
        """Mean of the epochs after the first (the first also pays for start-up)."""
        return statistics.mean(seconds[1:] if len(seconds) > 1 else seconds)

    ratio = steady(through_ray) / steady(plain)
    meta = provenance()
    payload = {
        **meta,
        "images": source,
        "tenants": args.tenants,
        "model_spec": spec.to_json(),
        "train_config": config.to_json(),
        "cpus_per_worker": args.cpus_per_worker,
        "device": str(device),
        "plain_epoch_seconds": plain,
        "ray_epoch_seconds": through_ray,
        "ray_fit_seconds": fit_seconds,
        "plain_seconds_per_epoch": steady(plain),
        "ray_seconds_per_epoch": steady(through_ray),
        "ratio": ratio,
        "target_ratio": 1.2,
    }
    lines = [
        "# Training overhead: Ray Train + Ray Data vs a plain in-memory loop",
        "",
        provenance_markdown(meta),
        f"Data: {source}, encrypted by {args.tenants} tenants ({CIPHER}, block {BLOCK_SIZE}), "
        f"one Parquet version. Model: {args.variant} ViT, size {args.size}; batch "
        f"{args.batch_size}; {args.epochs} epochs; {args.cpus_per_worker} CPU thread(s) per "
        f"side; device {device}.",
        "",
        "| | seconds per epoch (mean of epochs 2+, or the only one) | each epoch |",
        "|---|---:|---|",
        f"| plain PyTorch, in memory | {steady(plain):.2f} | "
        f"{', '.join(f'{s:.2f}' for s in plain)} |",
        f"| Ray Train, 1 worker, Ray Data from Parquet | {steady(through_ray):.2f} | "
        f"{', '.join(f'{s:.2f}' for s in through_ray)} |",
        "",
        f"Ratio Ray / plain: **{ratio:.2f}×** (target ≤ 1.2×). Whole Ray `fit()` including "
        f"worker start-up and checkpoints: {fit_seconds:.1f} s for {args.epochs} epochs.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_json(args.out / "train_overhead.json", payload)
    write_text(args.out / "train_overhead.md", text)


if __name__ == "__main__":
    main()
