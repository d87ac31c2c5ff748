"""Images per second for every cipher on CIFAR images, beside a plain numpy copy in the same run.

Run: `.venv/bin/python bench/cipher_throughput.py [--block-size 4] [--repeats 5]`
Writes bench/results/cipher_throughput.{json,md}. The ratio column is cipher time / copy time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import available_ciphers, create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_cifar

RESULTS = Path(__file__).parent / "results"


def best_seconds(action: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cifar = default_cifar_dir()
    if cifar is not None:
        images = load_cifar(cifar, "train").images
        source = f"CIFAR-10 ({cifar.name}, {len(images)} training images)"
    else:
        images = np.random.default_rng(0).integers(0, 256, (8192, 32, 32, 3), dtype=np.uint8)
        source = "random uint8 images (no CIFAR data found)"
    count = len(images)
    copy_seconds = best_seconds(lambda: images.copy(), args.repeats)
    rows = []
    for name in available_ciphers():
        key = Key.generate("bench", CipherSpec(name, args.block_size, images.shape[1]))
        cipher = create_cipher(key)
        nonces = np.arange(count) if cipher.per_image else None
        encrypt_seconds = best_seconds(
            lambda c=cipher, n=nonces: c.encrypt(images, n), args.repeats
        )
        encrypted = cipher.encrypt(images, nonces)
        decrypt_seconds = best_seconds(
            lambda c=cipher, e=encrypted, n=nonces: c.decrypt(e, n), args.repeats
        )
        rows.append(
            {
                "cipher": name,
                "encrypt_images_per_second": count / encrypt_seconds,
                "decrypt_images_per_second": count / decrypt_seconds,
                "encrypt_ratio_to_copy": encrypt_seconds / copy_seconds,
            }
        )
    meta = provenance()
    payload = {
        **meta,
        "images": source,
        "block_size": args.block_size,
        "copy_images_per_second": count / copy_seconds,
        "rows": rows,
    }
    lines = [
        "# Cipher throughput",
        "",
        provenance_markdown(meta),
        f"Images: {source}; block size {args.block_size}; best of {args.repeats} runs.",
        f"Baseline: numpy copy of the same array, {count / copy_seconds:,.0f} images/s.",
        "",
        "| cipher | encrypt images/s | decrypt images/s | encrypt time / copy time |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['cipher']} | {row['encrypt_images_per_second']:,.0f} | "
            f"{row['decrypt_images_per_second']:,.0f} | {row['encrypt_ratio_to_copy']:.2f}× |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    write_json(args.out / "cipher_throughput.json", payload)
    write_text(args.out / "cipher_throughput.md", text)


if __name__ == "__main__":
    main()
