"""The audit card: every cipher setting's accuracy next to the strongest attack in each category.

Run from the repository root: `python bench/audit_card.py` (same as `patchveil audit card`). Reads the
attack benches' results in bench/results (`jigsaw_strong.json`, `linkage_and_keys.json`,
`leakage_and_inversion.json`, each keeping its own command, commit, machine and date) and the
paper tables' accuracy; writes bench/results/audit_card.{json,md,png}. The picture is measured
here: plain / ciphertext / strongest jigsaw reconstruction for a few settings, on CIFAR-10 test
images (32 px, 4-px blocks) and one 224-px photograph (16-px blocks).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.audit.card import (
    accuracy_index,
    build_card,
    load_sources,
    provenance_of_sources,
    render_markdown,
)
from patchveil.cli_types import bounded_int
from patchveil.errors import PatchveilError
from patchveil.reporting import provenance, write_json, write_text

RESULTS = Path("bench/results")
# (title, cipher parameters, block size, image set) of the picture's rows.
PICTURE = (
    ("window 4, no group (32 px)", {"group": "none", "window": 4}, 4, "cifar"),
    ("whole image, no group (32 px)", {"group": "none", "window": 0}, 4, "cifar"),
    ("whole image + rf (32 px)", {"group": "rf", "window": 0}, 4, "cifar"),
    ("whole image, no group (224 px)", {"group": "none", "window": 0}, 16, "photograph"),
)


def picture_rows(images_per_setting: int) -> list[str]:
    """The titles of the picture's rows, top to bottom."""
    return [
        title
        for title, _, _, image_set in PICTURE
        for _ in range(images_per_setting if image_set == "cifar" else 1)
    ]


def picture(images_per_setting: int, data: Path | None) -> np.ndarray:
    """Plain / ciphertext / strongest reconstruction rows for the PICTURE settings."""
    from PIL import Image

    from patchveil.audit.jigsaw_mgc import reconstruct
    from patchveil.audit.scoring import photographs
    from patchveil.tenants.ciphers import create_cipher
    from patchveil.tenants.keys import CipherSpec, Key
    from patchveil.tenants.loaders import default_cifar_dir, load_source
    from patchveil.tenants.preview import labelled_grid

    folder = data or default_cifar_dir()
    if folder is None:
        raise PatchveilError("no CIFAR-10 folder found for the picture; pass --data DIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shared subset says it is partial
        cifar = load_source(folder, "test").images[:images_per_setting]
    photograph = photographs(224, ("astronaut",))
    rows = []
    for title, params, block_size, image_set in PICTURE:
        plain = cifar if image_set == "cifar" else photograph
        spec = CipherSpec("disposable", block_size, plain.shape[1], tuple(params.items()))
        ciphertexts = create_cipher(Key.generate("auditor", spec)).encrypt(
            plain, np.arange(len(plain)) + 2**61
        )
        solved = reconstruct(ciphertexts, block_size, int(params["window"]), str(params["group"]))
        print(f"picture: {title}", flush=True)
        for image, cipher_image, solved_image in zip(plain, ciphertexts, solved, strict=True):
            cells = [image, cipher_image, solved_image]
            if image.shape[0] != 32:  # one cell size for the whole picture
                cells = [
                    np.asarray(Image.fromarray(cell).resize((32 * 4, 32 * 4), Image.BILINEAR))
                    for cell in cells
                ]
            else:
                cells = [np.kron(cell, np.ones((4, 4, 1), dtype=np.uint8)) for cell in cells]
            rows.append(cells)
    return labelled_grid(rows, ["plain", "ciphertext", "strongest jigsaw"], target_width=128)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the attack results are"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="audit_card", help="file stem of the outputs")
    parser.add_argument(
        "--picture-images", type=bounded_int(1, 16), default=2, help="CIFAR images per setting"
    )
    parser.add_argument("--no-picture", action="store_true", help="skip the picture (fast)")
    parser.add_argument("--data", type=Path, help="CIFAR-10 folder for the picture")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), argv)


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Build and write the card (see the module docstring)."""
    sources = load_sources(args.results)
    if not sources:
        raise PatchveilError(
            f"no attack results in {args.results}; run bench/jigsaw_strong.py, "
            "bench/linkage_and_keys.py and bench/leakage_and_inversion.py first"
        )
    rows = build_card(sources, accuracy_index(args.results))
    card = {
        **provenance(None if argv is None else ["audit_card.py", *argv]),
        "sources": provenance_of_sources(sources),
        "rows": [row.to_json() for row in rows],
        "picture_rows": [] if args.no_picture else picture_rows(args.picture_images),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", card)
    write_text(args.out / f"{args.name}.md", render_markdown(card))
    if not args.no_picture:
        from patchveil.tenants.imageio import write_png

        write_png(args.out / f"{args.name}.png", picture(args.picture_images, args.data))
    print(f"audit card: {len(rows)} settings → {args.out / args.name}.{{json,md,png}}")
    return card


if __name__ == "__main__":
    main()
