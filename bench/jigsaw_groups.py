"""Which per-block group defeats the strongest jigsaw: every `disposable` group at 32 px.

Run from the repository root: `python bench/jigsaw_groups.py [--images 48]
[--costly-images 16] [--groups ...] [--update]`. Writes bench/results/jigsaw_groups.{json,md} with
the command, commit, machine and date; `--update` reruns only the groups named and keeps the
other rows of the existing file, each row saying the commit that measured it.

The frontier's default rule asks the strongest ciphertext-only attack to stay at reconstruction
SSIM ≤ 0.3 and neighbour accuracy ≤ 10%. This sweep runs that attack (the group-aware MGC solver,
`patchveil.audit.jigsaw_mgc`, public parameters only) on CIFAR-10 test images encrypted with a
fresh auditor key per group (whole-image block order, 4-px blocks) and says which group meets the
bar on its own, whatever model is trained on it. Groups with colour shuffle and rotation/flip
(48 and 96 elements per block) cost the solver tens of seconds per image, hence fewer images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from jigsaw_strong import summarise

from patchveil.audit.jigsaw_mgc import reconstruct
from patchveil.audit.scoring import score_reconstructions
from patchveil.groups import GROUP_NAMES, parse_group
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.loaders import default_cifar_dir, load_source
from patchveil.tune.objectives import NEIGHBOUR_LIMIT, SSIM_LIMIT

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 4


def costly(group: str) -> bool:
    parsed = parse_group(group)
    return parsed.colour_shuffle and parsed.rotation_flip


def run_group(group: str, plain: np.ndarray) -> dict[str, Any]:
    spec = CipherSpec("disposable", BLOCK_SIZE, plain.shape[1], (("group", group), ("window", 0)))
    ciphertexts = create_cipher(Key.generate("auditor", spec)).encrypt(
        plain, np.arange(len(plain)) + 2**61
    )
    start = time.perf_counter()
    solved = reconstruct(ciphertexts, BLOCK_SIZE, 0, group)
    seconds = time.perf_counter() - start
    scores = summarise(score_reconstructions(plain, solved, BLOCK_SIZE, group))
    ssim, neighbour = scores["ssim"]["mean"], scores["neighbour"]["mean"]
    parsed = parse_group(group)
    row = {
        "group": group,
        # Elements per block (None where pixel orders make it 16!·…) and their log2.
        "group_order": parsed.order if not parsed.pixel_shuffle else None,
        "group_bits": parsed.log2_order(BLOCK_SIZE),
        "images": len(plain),
        "scores": scores,
        "seconds_per_image": seconds / len(plain),
        "meets_default_bar": ssim <= SSIM_LIMIT and neighbour <= NEIGHBOUR_LIMIT,
    }
    print(
        f"{group}: SSIM {ssim:.2f}, neighbour {neighbour:.1%}, direct "
        f"{scores['direct']['mean']:.1%} ({row['seconds_per_image']:.1f} s/image)",
        flush=True,
    )
    return row


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Which per-block group defeats the strongest jigsaw (32 px, 4-px blocks, whole image)",
        "",
        provenance_markdown(payload),
        f"Attack: {payload['attack']}. Bar (the frontier's default rule): SSIM ≤ {SSIM_LIMIT} "
        f"and neighbour accuracy ≤ {NEIGHBOUR_LIMIT:.0%}.",
        "",
        "| group | elements per block | images | SSIM mean / median | neighbour mean / median "
        "| direct mean | s / image | meets the bar | commit |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in payload["rows"]:
        s = row["scores"]
        order = row.get("group_order") or f"2^{row.get('group_bits', 0):.1f}"
        lines.append(
            f"| {row['group']} | {order} | {row['images']} | "
            f"{s['ssim']['mean']:.2f} / {s['ssim']['median']:.2f} | "
            f"{100 * s['neighbour']['mean']:.1f}% / {100 * s['neighbour']['median']:.1f}% | "
            f"{100 * s['direct']['mean']:.1f}% | {row['seconds_per_image']:.1f} | "
            f"{'yes' if row['meets_default_bar'] else 'no'} | "
            f"{str(row.get('commit', payload['commit']))[:10]} |"
        )
    lines += [
        "",
        "Scores are per image, the best over the whole-picture transforms the group leaves",
        "ambiguous; neighbour accuracy is the share of true block adjacencies the reconstruction",
        "keeps. Few images per costly group: read the means with their spread in the JSON.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="CIFAR test images per group")
    parser.add_argument(
        "--costly-images", type=int, default=16, help="images for groups with cs and rf"
    )
    parser.add_argument("--groups", nargs="+", default=list(GROUP_NAMES))
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rerun only --groups and keep the other rows of the existing results",
    )
    args = parser.parse_args(argv)
    folder = args.data or default_cifar_dir()
    if folder is None:
        raise SystemExit("jigsaw_groups: no CIFAR-10 folder found; pass --data DIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared subset says it is partial
        cifar = load_source(folder, "test").images
    rows = [
        run_group(group, cifar[: args.costly_images if costly(group) else args.images])
        for group in args.groups
    ]
    here = provenance()
    for row in rows:
        row["commit"] = here["commit"]
    existing = args.out / "jigsaw_groups.json"
    if args.update and existing.is_file():
        earlier = json.loads(existing.read_text())
        rerun = {row["group"] for row in rows}
        kept = [
            {**row, "commit": row.get("commit", earlier["commit"])}
            for row in earlier["rows"]
            if row["group"] not in rerun
        ]
        order = {name: index for index, name in enumerate(GROUP_NAMES)}
        rows = sorted(kept + rows, key=lambda row: order.get(row["group"], len(order)))
    payload = {
        **here,
        "attack": "group-aware MGC jigsaw (patchveil.audit.jigsaw_mgc), ciphertext only",
        "block_size": BLOCK_SIZE,
        "image_size": int(cifar.shape[1]),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "jigsaw_groups.json", payload)
    write_text(args.out / "jigsaw_groups.md", markdown(payload))
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
