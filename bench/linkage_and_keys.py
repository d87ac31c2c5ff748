"""Known-image linkage and shared-key recovery on CIFAR-10: `python bench/linkage_and_keys.py`.

Writes bench/results/linkage_and_keys.{json,md}. Linkage: a gallery of training images plus the
true test images, each test ciphertext ranked against it. Key recovery (shared-key ciphers, 4-px
blocks on 32-px images): known plaintext from one pair, scored on the other test images; and
ciphertext-only in-block recovery from training-split ciphertexts, with other training images as
the attacker's public plain statistics, scored on the test ciphertexts (block order left to the
jigsaw solvers).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.audit.key_recovery import (
    BYTES,
    SHARED,
    CipherModel,
    key_table_by_probes,
    known_plaintext_attack,
    model_of,
    recover_in_block_key,
    score_in_block_key,
    score_known_plaintext,
)
from patchveil.audit.linkage import invariant_of, link_images
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_source

GROUPS = ("none", "np", "cs", "rf", "np_cs", "np_cs_rf")
SHARED_KEY_CIPHERS = ("conventional", "restricted", "invariant", "etc", "le", "pixel")
RESULTS = Path("bench/results")


def encrypt(spec: CipherSpec, images: np.ndarray) -> tuple[Any, np.ndarray]:
    cipher = create_cipher(Key.generate("auditor", spec))
    nonces = np.arange(len(images)) if cipher.per_image else None
    return cipher, cipher.encrypt(images, nonces)


def linkage_row(spec: CipherSpec, gallery: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    _, ciphertexts = encrypt(spec, queries)
    invariant, window = invariant_of(spec.name, spec.param_dict)
    sources = np.arange(len(gallery) - len(queries), len(gallery))
    result = link_images(gallery, ciphertexts, sources, spec.block_size, invariant, window)
    return result.to_json()


def key_rows(
    spec: CipherSpec, test: np.ndarray, attacked: np.ndarray, public: np.ndarray, restarts: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    cipher, ciphertexts = encrypt(spec, test)
    known_model = model_of(spec.name, spec.block_size)
    truth = key_table_by_probes(cipher.encrypt, spec.image_size, known_model.unit)
    recovered = known_plaintext_attack(test[0], ciphertexts[0], known_model)
    known = score_known_plaintext(recovered, truth, test[1:], ciphertexts[1:], known_model.unit)
    # The ciphertext-only attack assumes one in-block key for every block; etc and pixel draw
    # theirs per block position, and are attacked (and scored) under that assumption anyway.
    shared_model = (
        known_model
        if known_model.in_block == SHARED
        else CipherModel(BYTES, spec.block_size, SHARED, True)
    )
    truth_blocks = key_table_by_probes(cipher.encrypt, spec.image_size, shared_model.unit)
    key = recover_in_block_key(cipher.encrypt(attacked), public, shared_model, restarts)
    only = score_in_block_key(key, truth_blocks, ciphertexts, shared_model)
    return known.to_json(), only.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1000, help="training images in the gallery")
    parser.add_argument("--queries", type=int, default=200, help="test images encrypted")
    parser.add_argument("--attacked", type=int, default=1000, help="ciphertexts, ciphertext-only")
    parser.add_argument("--restarts", type=int, default=6, help="lattice-matching restarts")
    args = parser.parse_args()
    meta = provenance()
    folder = default_cifar_dir()
    if folder is None:
        raise SystemExit("CIFAR-10 not found: set PATCHVEIL_CIFAR_DIR")
    train = load_source(folder, "train").images
    test = load_source(folder, "test").images[: args.queries]
    gallery = np.concatenate([train[: args.gallery], test])
    public = train[: args.gallery]  # the attacker's public plain images (statistics only)
    attacked = train[len(train) - args.attacked :]  # a tenant's ciphertexts, captured
    specs = [
        CipherSpec("disposable", 4, 32, (("group", group), ("window", window)))
        for window in (0, 4)
        for group in GROUPS
    ] + [CipherSpec(name, 4, 32) for name in SHARED_KEY_CIPHERS]
    rows = []
    for spec in specs:
        started = time.perf_counter()
        row: dict[str, Any] = {
            "cipher": spec.name,
            "params": spec.param_dict,
            "block_size": spec.block_size,
            "image_size": spec.image_size,
            "linkage": linkage_row(spec, gallery, test),
        }
        row["rank1"], row["rank5"] = row["linkage"]["rank1"], row["linkage"]["rank5"]
        if spec.name in SHARED_KEY_CIPHERS:
            restarts = max(1, args.restarts // 2) if spec.name == "le" else args.restarts
            known, only = key_rows(spec, test, attacked, public, restarts)
            row["known_plaintext"], row["ciphertext_only"] = known, only
            row.update({name: known[name] for name in ("key_fraction", "images_exact")})
            row["pixel_exact"] = known["pixel_exact"]
            for name in ("np_recovered", "ps_recovered", "ssim", "psnr"):
                row[name] = only[name]
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(spec.name, spec.param_dict, {k: v for k, v in row.items() if k in COLUMNS})
        rows.append(row)
    payload = {
        **meta,
        "data": f"CIFAR-10 ({folder}): gallery {args.gallery} training + {len(test)} test images; "
        f"{args.attacked} training ciphertexts attacked ciphertext-only, "
        f"{args.gallery} other training images as public statistics",
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "linkage_and_keys.json", payload)
    write_text(RESULTS / "linkage_and_keys.md", markdown(payload))


COLUMNS = (
    "rank1",
    "rank5",
    "key_fraction",
    "pixel_exact",
    "images_exact",
    "np_recovered",
    "ps_recovered",
    "ssim",
    "psnr",
)


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Known-image linkage and shared-key recovery (4-px blocks, 32-px CIFAR-10)",
        "",
        provenance_markdown(payload),
        f"Data: {payload['data']}.",
        "",
        "- linkage: rank of the true source among the gallery (block invariants, multisets per "
        "public window); ties count against the attacker.",
        "- known plaintext: one plain/cipher pair → share of key positions recovered, share of "
        "other images' values / whole images decrypted exactly.",
        "- ciphertext-only: in-block key from correlations across blocks and images (NP from the "
        "leading eigenvector's signs, PS by matching correlations to the pixel lattice); SSIM/PSNR "
        "of the in-block decryption against the true one, block order left to the jigsaw solvers; "
        "best over block turns/mirrors, colour orders and global inversion. etc and pixel have no "
        "in-block key shared by every block: the attack's assumption fails there.",
        "",
        "| cipher | params | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for row in payload["rows"]:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "–"
        cells = []
        for name in COLUMNS:
            value = row.get(name)
            if value is None:
                cells.append("–")
            elif name == "psnr":
                cells.append(f"{value:.1f} dB")
            elif name == "ssim":
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{100 * value:.1f}%")
        lines.append(f"| {row['cipher']} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
