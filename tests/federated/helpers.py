"""Tiny tenants for federated tests: synthetic 16×16 sources and development key stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchveil.models.key_lock import KeyLockConfig
from patchveil.models.small_nets import NetSpec
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore

IMAGE_SIZE = 16
TINY_LOCKED = NetSpec(
    "lenet", num_classes=4, image_size=IMAGE_SIZE, width=4, key_lock=KeyLockConfig(8, 8)
)
TINY_PLAIN = NetSpec("lenet", num_classes=4, image_size=IMAGE_SIZE, width=4)


def write_tenant_source(path: Path, seed: int, count: int = 24) -> str:
    """Images whose class is their dominant colour channel (learnable in a few steps)."""
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % 4
    images = generator.integers(0, 96, (count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        if label < 3:
            images[index, ..., label] += 128
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        images=images,
        labels=labels.astype(np.int64),
        class_names=np.asarray(["red", "green", "blue", "dark"]),
    )
    return str(path)


def make_key_store(folder: Path, tenant_id: str) -> str:
    KeyStore(folder).create(tenant_id, CipherSpec("plain", 4, IMAGE_SIZE))
    return str(folder)


def key_vector_bytes(folder: str, tenant_id: str, key_dim: int) -> bytes:
    from patchveil.tenants.key_lock import key_vector

    return key_vector(KeyStore(folder).load(tenant_id), key_dim).tobytes()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` whose bytes contain `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
