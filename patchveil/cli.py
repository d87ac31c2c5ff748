"""The `patchveil` command. Tenant-side commands import neither torch nor ray, so they start fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from patchveil.errors import PatchveilError

if TYPE_CHECKING:
    import numpy as np

    from patchveil.tenants.client import Tenant

Handler = Callable[[argparse.Namespace], int]


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param takes name=value, got {text!r}")
    return name, value


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path, help="the tenant's key store folder")
    parser.add_argument("--tenant", required=True, help="tenant id")


# --- tenant-side commands -------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace) -> int:
    from patchveil.tenants.keys import CipherSpec
    from patchveil.tenants.keystore import KeyStore

    spec = CipherSpec(args.cipher, args.block_size, args.image_size, tuple(args.param))
    key = KeyStore(args.store).create(args.tenant, spec)
    print(f"tenant {key.tenant_id}: key {key.key_id} version {key.version} ({spec.name})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from patchveil.tenants.keystore import KeyStore

    store = KeyStore(args.store)
    if args.action == "rotate":
        key = store.rotate(args.tenant)
        print(f"tenant {key.tenant_id}: key {key.key_id} version {key.version} is now active")
    elif args.action == "retire":
        if args.version is None:
            raise PatchveilError("keys retire needs --version N")
        store.retire(args.tenant, args.version)
        print(f"tenant {args.tenant}: key version {args.version} retired (its sealed copy erased)")
    else:
        versions = store.describe(args.tenant)
        if not versions:
            raise PatchveilError(
                f"no key for tenant {args.tenant!r} in key store {args.store}; create one with "
                "`patchveil keygen`"
            )
        print(json.dumps(versions, indent=2))
    return 0


def _nonces(
    tenant: Tenant, per_image: bool, count: int, first_nonce: int | None, decrypt: bool
) -> np.ndarray | None:
    """Nonces for a per-image cipher: fresh ones from the tenant's counter when encrypting,
    the range the encryption printed (`--first-nonce`) when decrypting."""
    if not per_image:
        return None
    import numpy as np

    if first_nonce is None:
        if decrypt:
            raise PatchveilError(
                "this key's cipher draws a fresh transform per image: pass --first-nonce, as "
                "printed when the images were encrypted"
            )
        first_nonce = tenant.store.reserve_nonces(tenant.tenant_id, count)
    return np.arange(first_nonce, first_nonce + count, dtype=np.int64)


def _crypt(args: argparse.Namespace, decrypt: bool) -> int:
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.imageio import read_images, write_images

    tenant = Tenant(args.tenant, args.store)
    batch = read_images(args.input)
    cipher = tenant.cipher(args.key_version)
    cipher.check_images(batch.images)  # a bad input fails before any nonce is reserved
    nonces = _nonces(tenant, cipher.per_image, len(batch.images), args.first_nonce, decrypt)
    if decrypt:
        result = cipher.decrypt(batch.images, nonces)
    else:
        result = cipher.encrypt(batch.images, nonces)
    write_images(args.output, batch, result)
    verb = "decrypted" if decrypt else "encrypted"
    print(f"{verb} {len(result)} image(s) with key version {cipher.key_version} → {args.output}")
    if nonces is not None and not decrypt:
        print(f"per-image nonces {nonces[0]}..{nonces[-1]}: decrypt with --first-nonce {nonces[0]}")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    return _crypt(args, decrypt=False)


def cmd_decrypt(args: argparse.Namespace) -> int:
    return _crypt(args, decrypt=True)


def cmd_show(args: argparse.Namespace) -> int:
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.imageio import read_images, write_png
    from patchveil.tenants.preview import labelled_grid

    if args.limit < 1:
        raise PatchveilError(f"--limit must be at least 1, got {args.limit}")
    tenant = Tenant(args.tenant, args.store)
    images = read_images(args.input).images[: args.limit]
    cipher = tenant.cipher(args.key_version)
    cipher.check_images(images)
    nonces = _nonces(tenant, cipher.per_image, len(images), args.first_nonce, False)
    encrypted = cipher.encrypt(images, nonces)
    rows = [[plain, secret] for plain, secret in zip(images, encrypted, strict=True)]
    write_png(args.output, labelled_grid(rows, ["plain", f"{cipher.spec.name}"]))
    print(f"wrote {args.output}")
    if nonces is not None:
        print(f"per-image nonces {nonces[0]}..{nonces[-1]}: --first-nonce {nonces[0]}")
    return 0


def cmd_ciphers(args: argparse.Namespace) -> int:
    from patchveil.tenants.ciphers import key_space_table

    # The whole table first: a bad geometry must fail before half a table is printed.
    table = key_space_table(args.block_size, args.image_size)
    print(f"{'cipher':<14}{'key space (bits)':>18}  description")
    for name, size, summary in table:
        print(f"{name:<14}{size:>18.1f}  {summary}")
    print("Key-space size counts distinct transforms; it is not a security claim.")
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from patchveil.tenants.loaders import load_source
    from patchveil.tenants.split import split_among_tenants, write_tenant_sources

    if args.out.exists() and any(args.out.iterdir()):
        raise PatchveilError(f"output folder {args.out} exists and is not empty")
    data = load_source(args.source, args.split)
    tenant_ids = [f"{args.prefix}{index + 1}" for index in range(args.tenants)]
    parts = split_among_tenants(data, tenant_ids, args.dirichlet, args.seed)
    paths = write_tenant_sources(
        parts, args.out, dirichlet_alpha=args.dirichlet, seed=args.seed, source=str(args.source)
    )
    for tenant_id, path in paths.items():
        print(f"{tenant_id}: {len(parts[tenant_id])} images → {path}")
    return 0


def cmd_jigsaw_audit(args: argparse.Namespace) -> int:
    from patchveil.experiments.jigsaw_audit import run

    run(args)
    return 0


def cmd_paper_table(args: argparse.Namespace) -> int:
    from patchveil.experiments.paper_table import render, run

    if args.render:
        render(args)
    else:
        run(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchveil",
        description="Train and query one shared ViT on images each tenant encrypted with its own key.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="create a tenant's first key in its key store")
    _store_args(keygen)
    keygen.add_argument("--cipher", required=True, help="cipher name (see `patchveil ciphers`)")
    keygen.add_argument("--block-size", required=True, type=int, help="block size M (= ViT patch)")
    keygen.add_argument("--image-size", required=True, type=int, help="image side H (square)")
    keygen.add_argument(
        "--param", action="append", type=_param, default=[], help="cipher parameter name=value"
    )
    keygen.set_defaults(handler=cmd_keygen)

    keys = commands.add_parser("keys", help="list, rotate or retire a tenant's key versions")
    keys.add_argument("action", choices=["list", "rotate", "retire"])
    _store_args(keys)
    keys.add_argument("--version", type=int, help="the version to retire")
    keys.set_defaults(handler=cmd_keys)

    for name, handler, verb in (
        ("encrypt", cmd_encrypt, "encrypt"),
        ("decrypt", cmd_decrypt, "decrypt"),
    ):
        sub = commands.add_parser(
            name,
            help=f"{verb} a .npy batch, an image or a folder of images",
            description=f"{verb.capitalize()} a .npy batch, an image or a folder of images. A "
            "per-image cipher (disposable) takes one nonce per image, in input order (the "
            ".npy batch, or the folder's files sorted by name): encrypt reserves fresh ones from "
            "the tenant's key store and prints the first; decrypt needs it as --first-nonce.",
        )
        _store_args(sub)
        sub.add_argument("--in", dest="input", required=True, type=Path)
        sub.add_argument("--out", dest="output", required=True, type=Path)
        sub.add_argument("--key-version", type=int, help="default: the newest active version")
        sub.add_argument(
            "--first-nonce", type=int, help="per-image ciphers: the first nonce of the batch"
        )
        sub.set_defaults(handler=handler)

    show = commands.add_parser("show", help="write plain and encrypted images side by side")
    _store_args(show)
    show.add_argument("--in", dest="input", required=True, type=Path)
    show.add_argument("--out", dest="output", required=True, type=Path)
    show.add_argument("--key-version", type=int)
    show.add_argument("--limit", type=int, default=8, help="at most this many images")
    show.add_argument("--first-nonce", type=int, help="per-image ciphers: the first nonce")
    show.set_defaults(handler=cmd_show)

    ciphers = commands.add_parser("ciphers", help="list the ciphers and their key-space sizes")
    ciphers.add_argument("--block-size", type=int, default=4)
    ciphers.add_argument("--image-size", type=int, default=32)
    ciphers.set_defaults(handler=cmd_ciphers)
    data = commands.add_parser("data", help="prepare source data for tenants")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    split = data_commands.add_parser("split", help="split a labelled source into tenant folders")
    split.add_argument("--source", required=True, type=Path, help="CIFAR dir, image folder, .npz")
    split.add_argument("--tenants", required=True, type=int, help="number of tenants")
    split.add_argument(
        "--dirichlet", type=float, help="non-IID: Dirichlet alpha per class (default: IID)"
    )
    split.add_argument("--split", default="train", help="which split of the source (train/test)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--prefix", default="tenant-", help="tenant ids are PREFIX1..PREFIXn")
    split.add_argument("--out", required=True, type=Path)
    split.set_defaults(handler=cmd_data_split)

    from patchveil.cli_platform import add_platform_commands

    add_platform_commands(commands, _param)

    experiment = commands.add_parser("experiment", help="reproducible experiments (bench/results)")
    experiments = experiment.add_subparsers(dest="experiment", required=True, metavar="NAME")
    paper = experiments.add_parser("paper-table", help="the seed paper's accuracy table")
    from patchveil.experiments.options import add_paper_table_arguments

    add_paper_table_arguments(paper)
    paper.set_defaults(handler=cmd_paper_table)
    jigsaw = experiments.add_parser(
        "jigsaw-audit", help="what a ciphertext-only jigsaw solver recovers (bench/results)"
    )
    from patchveil.experiments.options import add_jigsaw_audit_arguments

    add_jigsaw_audit_arguments(jigsaw)
    jigsaw.set_defaults(handler=cmd_jigsaw_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except PatchveilError as error:
        print(f"patchveil: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # The file system refused (output is a folder, permission denied, disk full): the
        # user's to fix, so one line as well, not a traceback.
        where = f": {error.filename}" if error.filename else ""
        print(f"patchveil: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patchveil: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
