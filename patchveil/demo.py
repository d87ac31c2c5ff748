"""`make demo`: the platform end to end on one machine, with real CIFAR-10 images.

Stages: split the data among 4 tenants → each tenant makes its own key → picture of what every
cipher hides and a table of key spaces → (further stages are added as the platform grows).
Everything is written under `demo-output/` (override with PATCHVEIL_DEMO_DIR).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from patchveil.tenants.ciphers import available_ciphers, cipher_class, key_space_bits
from patchveil.tenants.client import Tenant
from patchveil.tenants.imageio import write_png
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.loaders import LabeledImages, default_cifar_dir, load_cifar
from patchveil.tenants.preview import cipher_gallery
from patchveil.tenants.split import split_among_tenants

TENANTS = ("hospital-a", "factory-b", "bank-c", "clinic-d")
BLOCK_SIZE = 4


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def load_data() -> tuple[LabeledImages, LabeledImages, str]:
    folder = default_cifar_dir()
    if folder is None:
        sys.exit(
            "demo: no CIFAR-10 data found; set PATCHVEIL_CIFAR_DIR to a CIFAR-10 python folder"
        )
    return load_cifar(folder, "train"), load_cifar(folder, "test"), str(folder)


def main() -> None:
    started = time.perf_counter()
    out = Path(os.environ.get("PATCHVEIL_DEMO_DIR", "demo-output")).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    stage("1. Data: real CIFAR-10, split among 4 tenants")
    train, test, folder = load_data()
    parts = split_among_tenants(train, list(TENANTS), None, seed=0)
    print(f"{len(train)} training and {len(test)} test images from {folder}")
    for tenant_id, part in parts.items():
        print(f"  {tenant_id:<11} {len(part):>5} images")

    stage("2. Every tenant makes its own key (in its own key store) and encrypts its share")
    for tenant_id, part in parts.items():
        tenant = Tenant(tenant_id, out / "tenants" / tenant_id / "keys")
        key = tenant.create_key(CipherSpec("conventional", BLOCK_SIZE, part.image_size))
        encrypted = tenant.encrypt(part.images)
        np.save(out / "tenants" / tenant_id / "encrypted.npy", encrypted)
        changed = float((encrypted != part.images).mean())
        print(f"  {tenant_id:<11} {key!r}: {len(encrypted)} images, {changed:.1%} of bytes changed")

    stage("3. What each cipher hides")
    gallery, names = cipher_gallery(test.images[:6], BLOCK_SIZE)
    write_png(out / "ciphers.png", gallery)
    print(f"  plain beside {', '.join(names[1:])}: {out / 'ciphers.png'}")

    stage("4. Key spaces (distinct transforms; a count, not a security claim)")
    print(f"  {'cipher':<14}{'bits':>9}  description")
    for name in available_ciphers():
        bits = key_space_bits(CipherSpec(name, BLOCK_SIZE, train.image_size))
        print(f"  {name:<14}{bits:>9.0f}  {cipher_class(name).summary}")

    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main()
