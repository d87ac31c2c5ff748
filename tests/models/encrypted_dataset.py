"""A tiny published dataset version for training tests: 2 tenants, 2 independent keys.

The test plays the tenants: it generates each key, encrypts CIFAR images (random images when no
CIFAR folder is found) and writes train and validation shards; the platform code under test only
ever gets the version folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchveil.datasets import (
    DatasetVersion,
    encrypted_batch_to_table,
    publish_version,
    version_uri,
    write_shard,
)
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_cifar

IMAGE_SIZE = 32
BLOCK_SIZE = 4
CIPHER = "conventional"
TENANTS = ("acme", "bolt")


@dataclass(frozen=True)
class TinyDataset:
    """The published version plus what only the tenants hold (keys, plain images)."""

    version: DatasetVersion
    keys: dict[str, Key]
    plain_images: np.ndarray
    validation: dict[str, tuple[np.ndarray, np.ndarray]]  # tenant → (ciphertext, labels)


def plain_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    folder = default_cifar_dir()
    if folder is not None:
        source = load_cifar(folder, "train")
        pick = np.random.default_rng(seed).permutation(len(source.images))[:count]
        return np.ascontiguousarray(source.images[pick]), source.labels[pick].astype(np.int64)
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 10, count)
    # Synthetic but learnable: the label sets the mean brightness of the image.
    noise = generator.integers(0, 40, (count, IMAGE_SIZE, IMAGE_SIZE, 3))
    images = (labels[:, None, None, None] * 20 + noise).astype(np.uint8)
    return images, labels.astype(np.int64)


def publish_tiny_dataset(
    dataset_root: Path | str,
    name: str = "tiny",
    train_per_tenant: int = 160,
    validation_per_tenant: int = 48,
    augment_variants: dict[str, int] | None = None,
) -> TinyDataset:
    """Publish `<root>/<name>/v1`: per tenant one train and one validation shard.

    `augment_variants` {tenant: K}: that tenant's train shard also holds K variants of each
    image (sample ids `<tenant>:<i>:aug<k>`, as onboarding writes them; here a flip stands in
    for the tenant's crop/flip)."""
    per_tenant = train_per_tenant + validation_per_tenant
    images, labels = plain_images(per_tenant * len(TENANTS))
    folder = version_uri(str(dataset_root), name, 1)
    shards, keys, validation = [], {}, {}
    for position, tenant_id in enumerate(TENANTS):
        key = Key.generate(tenant_id, CipherSpec(CIPHER, BLOCK_SIZE, IMAGE_SIZE))
        keys[tenant_id] = key
        rows = slice(position * per_tenant, (position + 1) * per_tenant)
        encrypted = create_cipher(key).encrypt(images[rows])
        own_labels = labels[rows]
        for split, part in (
            ("train", slice(0, train_per_tenant)),
            ("validation", slice(train_per_tenant, per_tenant)),
        ):
            count = len(own_labels[part])
            part_images = [encrypted[part]]
            sample_ids = [f"{tenant_id}:{split}{index}" for index in range(count)]
            variants = (augment_variants or {}).get(tenant_id, 0) if split == "train" else 0
            for variant in range(1, variants + 1):
                flipped = images[rows][part][:, :, ::-1] if variant % 2 else images[rows][part]
                part_images.append(create_cipher(key).encrypt(np.ascontiguousarray(flipped)))
                sample_ids += [f"{tenant_id}:{split}{index}:aug{variant}" for index in range(count)]
            table = encrypted_batch_to_table(
                np.ascontiguousarray(np.concatenate(part_images)),
                np.tile(own_labels[part], variants + 1),
                tenant_id=tenant_id,
                key_version=key.version,
                sample_ids=sample_ids,
                cipher_name=CIPHER,
                block_size=BLOCK_SIZE,
                image_size=IMAGE_SIZE,
                split=split,
            )
            shards.append(write_shard(table, folder, f"{tenant_id}-{split}"))
        validation[tenant_id] = (encrypted[train_per_tenant:], own_labels[train_per_tenant:])
    version = publish_version(str(dataset_root), name, 1, shards)
    return TinyDataset(version=version, keys=keys, plain_images=images, validation=validation)
