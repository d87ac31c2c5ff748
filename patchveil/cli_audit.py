"""`patchveil audit ...`: the auditor's commands. Attacks see ciphertexts and public parameters;
the plain images are read only to score them. Imports neither torch nor ray."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.cli_types import bounded_int, image_side
from patchveil.errors import PatchveilError
from patchveil.groups import GROUP_NAMES


def read_batch(path: Path, what: str) -> np.ndarray:
    """uint8 images [N, H, W, 3] from an `.npz` written by `patchveil encrypt`, a `.npy` batch,
    an image or a folder of images."""
    from patchveil.tenants.ciphertext_files import ENCRYPTED_BATCH_SUFFIX, read_encrypted
    from patchveil.tenants.imageio import read_images

    if path.suffix.lower() == ENCRYPTED_BATCH_SUFFIX and path.is_file():
        return np.concatenate([batch.images for batch in read_encrypted(path).batches])
    return read_images(path).images


def _paired(ciphertexts: np.ndarray, plain: np.ndarray) -> None:
    if plain.shape != ciphertexts.shape:
        raise PatchveilError(
            f"--plain holds {list(plain.shape)} but the ciphertexts are {list(ciphertexts.shape)}: "
            "give the plain images of the ciphertexts, in the same order"
        )


def _print(result: dict[str, Any], text: str, as_json: bool) -> None:
    print(json.dumps(result, indent=2) if as_json else text)


def cmd_audit_jigsaw(args: argparse.Namespace) -> int:
    from patchveil.audit.jigsaw_mgc import reconstruct
    from patchveil.audit.scoring import score_reconstructions

    ciphertexts = read_batch(args.ciphertexts, "ciphertexts")
    plain = read_batch(args.plain, "plain images") if args.plain else None
    if plain is not None:
        _paired(ciphertexts, plain)
    if ciphertexts.shape[1] % args.block_size:
        raise PatchveilError(
            f"block size {args.block_size} does not divide the image size {ciphertexts.shape[1]}"
        )
    if args.output is not None and args.output.suffix.lower() != ".npy":
        raise PatchveilError(f"--out {args.output} must end in .npy")
    solved = reconstruct(ciphertexts, args.block_size, args.window, args.group)
    if args.output is not None:
        from patchveil.tenants.imageio import ImageBatch, write_images

        write_images(args.output, ImageBatch(solved, "npy"), solved)
    result: dict[str, Any] = {"images": len(solved), "solver": "mgc", "reconstructions": None}
    result["reconstructions"] = str(args.output) if args.output else None
    text = f"reassembled {len(solved)} image(s)" + (f" → {args.output}" if args.output else "")
    if plain is not None:
        score = score_reconstructions(plain, solved, args.block_size, args.group)
        result["scores"] = {
            measure: score.summary(measure).mean
            for measure in ("direct", "neighbour", "largest_component", "ssim", "psnr")
        }
        text += "; " + ", ".join(f"{k} {v:.3f}" for k, v in result["scores"].items())
    _print(result, text, args.json)
    return 0


def cmd_audit_linkage(args: argparse.Namespace) -> int:
    from patchveil.audit.linkage import invariant_of, link_images

    ciphertexts = read_batch(args.ciphertexts, "ciphertexts")
    plain = read_batch(args.plain, "plain images")
    _paired(ciphertexts, plain)
    gallery = read_batch(args.gallery, "gallery")
    if gallery.shape[1:] != plain.shape[1:]:
        raise PatchveilError(
            f"gallery images are {list(gallery.shape[1:])}, not {list(plain.shape[1:])}"
        )
    params = dict(args.param)
    try:
        invariant, window = invariant_of(args.cipher, params)
    except ValueError as error:
        raise PatchveilError(str(error)) from None
    # The true sources join the gallery (an attacker's gallery holds the images it suspects).
    everything = np.concatenate([gallery, plain])
    sources = len(gallery) + np.arange(len(plain))
    result = link_images(everything, ciphertexts, sources, args.block_size, invariant, window)
    _print(
        result.to_json(),
        f"linked {result.queries} ciphertext(s) against {result.gallery_size} gallery images: "
        f"rank-1 {result.rank1:.1%}, rank-5 {result.rank5:.1%}",
        args.json,
    )
    return 0


def cmd_audit_keys(args: argparse.Namespace) -> int:
    from patchveil.audit.key_recovery import known_plaintext_attack, model_of

    ciphertexts = read_batch(args.ciphertexts, "ciphertexts")
    plain = read_batch(args.plain, "plain images")
    _paired(ciphertexts, plain)
    if len(plain) < 2:
        raise PatchveilError("known plaintext needs at least 2 pairs: one to attack, one to check")
    try:
        model = model_of(args.cipher, args.block_size)
    except ValueError as error:
        raise PatchveilError(str(error)) from None
    # One known pair (the first) is all the attacker gets; the others only score the result.
    table = known_plaintext_attack(plain[0], ciphertexts[0], model)
    decrypted = table.decrypt(ciphertexts[1:], model.unit)
    equal = decrypted == plain[1:]
    result = {
        "known_pairs": 1,
        "other_images": len(plain) - 1,
        "determined_fraction": float(table.determined.mean()),
        "pixel_exact": float(equal.mean()),
        "images_exact": float(equal.reshape(len(equal), -1).all(axis=1).mean()),
    }
    _print(
        result,
        f"from one known pair: {result['pixel_exact']:.1%} of the other images' values and "
        f"{result['images_exact']:.1%} of the other images decrypted exactly",
        args.json,
    )
    return 0


def cmd_audit_card(args: argparse.Namespace) -> int:
    from patchveil.experiments.audit_card import run

    run(args)
    return 0


def add_audit_commands(commands: argparse._SubParsersAction, param_type: Any) -> None:
    """The `audit` command and its actions."""
    audit = commands.add_parser(
        "audit", help="attack ciphertexts as an auditor would (the plain images only score)"
    )
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ATTACK")

    jigsaw = actions.add_parser(
        "jigsaw", help="reassemble block-scrambled ciphertexts (MGC solver, window/group aware)"
    )
    jigsaw.add_argument("--ciphertexts", required=True, type=Path, help=".npz, .npy or folder")
    jigsaw.add_argument("--block-size", required=True, type=image_side)
    jigsaw.add_argument(
        "--window", type=bounded_int(0, 4096), default=0, help="public window (blocks); 0: none"
    )
    jigsaw.add_argument("--group", default="none", choices=GROUP_NAMES, help="per-block group")
    jigsaw.add_argument("--plain", type=Path, help="the plain images, to score the result")
    jigsaw.add_argument("--out", dest="output", type=Path, help="write reconstructions (.npy)")
    jigsaw.add_argument("--json", action="store_true")
    jigsaw.set_defaults(handler=cmd_audit_jigsaw)

    linkage = actions.add_parser(
        "linkage", help="find each ciphertext's source in a gallery of known images"
    )
    linkage.add_argument("--ciphertexts", required=True, type=Path)
    linkage.add_argument("--plain", required=True, type=Path, help="their sources, in order")
    linkage.add_argument("--gallery", required=True, type=Path, help="other known images")
    linkage.add_argument("--cipher", required=True)
    linkage.add_argument("--param", action="append", type=param_type, default=[])
    linkage.add_argument("--block-size", required=True, type=image_side)
    linkage.add_argument("--json", action="store_true")
    linkage.set_defaults(handler=cmd_audit_linkage)

    keys = actions.add_parser(
        "keys", help="known plaintext: what one plain/cipher pair gives away of a shared key"
    )
    keys.add_argument("--ciphertexts", required=True, type=Path)
    keys.add_argument("--plain", required=True, type=Path, help="their plain images, in order")
    keys.add_argument("--cipher", required=True, help="the cipher's (public) name")
    keys.add_argument("--block-size", required=True, type=image_side)
    keys.add_argument("--json", action="store_true")
    keys.set_defaults(handler=cmd_audit_keys)

    card = actions.add_parser(
        "card", help="the audit card from the attack benches' results (bench/audit_card.py)"
    )
    from patchveil.experiments.audit_card import add_arguments

    add_arguments(card)
    card.set_defaults(handler=cmd_audit_card)
