"""The `patchveil` command. Tenant-side commands import neither torch nor ray, so they start fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from patchveil.cli_types import (
    OneLineParser,
    bounded_float,
    bounded_int,
    image_side,
    positive_int,
    seed,
)
from patchveil.errors import PatchveilError

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
    from patchveil.tenants.keys import CipherSpec
    from patchveil.tenants.keystore import KeyStore

    store = KeyStore(args.store)
    if args.action != "rotate" and args.param:
        raise PatchveilError("--param is for `keys rotate` only")
    if args.action != "retire" and (args.version is not None or args.force):
        raise PatchveilError("--version and --force are for `keys retire` only")
    if args.action == "rotate":
        spec = None
        if args.param:
            # The newest version's cipher with some parameters changed (e.g. to leave a bad one).
            current = store.describe(args.tenant)
            if not current:
                raise PatchveilError(f"no key for tenant {args.tenant!r} in key store {args.store}")
            base = CipherSpec.from_json(current[-1]["cipher"])
            params = {**base.param_dict, **dict(args.param)}
            spec = CipherSpec(base.name, base.block_size, base.image_size, tuple(params.items()))
        key = store.rotate(args.tenant, spec)
        print(f"tenant {key.tenant_id}: key {key.key_id} version {key.version} is now active")
    elif args.action == "retire":
        if args.version is None:
            raise PatchveilError("keys retire needs --version N")
        if store.retire(args.tenant, args.version, force=args.force):
            print(
                f"tenant {args.tenant}: key version {args.version} retired (its sealed copy erased)"
            )
        else:
            print(f"tenant {args.tenant}: key version {args.version} was already retired")
    else:
        versions = store.describe(args.tenant)
        if not versions:
            raise PatchveilError(
                f"no key for tenant {args.tenant!r} in key store {args.store}; create one with "
                "`patchveil keygen`"
            )
        print(json.dumps(versions, indent=2))
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from patchveil.tenants.ciphertext_files import (
        check_distinct_paths,
        check_encrypted_output,
        write_encrypted,
    )
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.imageio import read_images

    check_distinct_paths(args.input, args.output)
    tenant = Tenant(args.tenant, args.store)
    source = read_images(args.input)
    check_encrypted_output(source, args.output)  # before any nonce is reserved
    batch = tenant.encrypt(source.images, args.key_version)
    write_encrypted(args.output, source, batch)
    fresh = " with fresh per-image nonces" if batch.nonces is not None else ""
    print(
        f"encrypted {len(batch)} image(s) with key version {batch.key_version}{fresh} → "
        f"{args.output} (key version, nonces and integrity tags are stored with them)"
    )
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    import numpy as np

    from patchveil.tenants.ciphertext_files import (
        check_distinct_paths,
        read_encrypted,
        write_decrypted,
    )
    from patchveil.tenants.client import Tenant

    check_distinct_paths(args.input, args.output)
    tenant = Tenant(args.tenant, args.store)
    encrypted = read_encrypted(args.input)
    # Every batch is decrypted (and checked) before anything is written.
    plain = np.concatenate([tenant.decrypt(batch) for batch in encrypted.batches])
    write_decrypted(args.output, encrypted, plain)
    versions = sorted({batch.key_version for batch in encrypted.batches})
    print(
        f"decrypted {len(plain)} image(s) with key version(s) "
        f"{', '.join(map(str, versions))} → {args.output}"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.imageio import read_images, write_png
    from patchveil.tenants.preview import labelled_grid

    tenant = Tenant(args.tenant, args.store)
    images = read_images(args.input).images[: args.limit]
    batch = tenant.encrypt(images, args.key_version)
    rows = [[plain, secret] for plain, secret in zip(images, batch.images, strict=True)]
    write_png(args.output, labelled_grid(rows, ["plain", batch.cipher]))
    print(f"wrote {args.output}")
    return 0


def cmd_ciphers(args: argparse.Namespace) -> int:
    from patchveil.tenants.ciphers import key_space_table

    # The whole table first: a bad geometry must fail before half a table is printed.
    table = key_space_table(args.block_size, args.image_size)
    print(f"{'cipher':<14}{'key space (bits)':>18}  description")
    for name, size, summary in table:
        print(f"{name:<14}{size:>18.1f}  {summary}")
    print("Key-space size counts distinct transforms; it is not a security claim.")
    from patchveil.presets import load_presets

    presets = load_presets()
    print(f"Presets (measured in {presets.source.name}, commit {presets.commit[:10] or '?'}):")
    for preset in presets.presets:
        print(f"  {preset.name}{' (default)' if preset.default else ''}: {preset.summary()}")
    if not presets.presets:
        print("  none measured yet (`patchveil tune` writes them)")
    elif presets.default is None:
        print("  no default: no measured configuration kept the strongest attack below the bar")
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
    parser = OneLineParser(
        prog="patchveil",
        description="Train and query one shared ViT on images each tenant encrypted with its own key.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="create a tenant's first key in its key store")
    _store_args(keygen)
    keygen.add_argument("--cipher", required=True, help="cipher name (see `patchveil ciphers`)")
    keygen.add_argument(
        "--block-size", required=True, type=image_side, help="block size M (= ViT patch)"
    )
    keygen.add_argument("--image-size", required=True, type=image_side, help="image side H")
    keygen.add_argument(
        "--param", action="append", type=_param, default=[], help="cipher parameter name=value"
    )
    keygen.set_defaults(handler=cmd_keygen)

    keys = commands.add_parser("keys", help="list, rotate or retire a tenant's key versions")
    keys.add_argument("action", choices=["list", "rotate", "retire"])
    _store_args(keys)
    keys.add_argument("--version", type=positive_int, help="the version to retire")
    keys.add_argument("--force", action="store_true", help="retire even the only active version")
    keys.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        help="rotate: change a cipher parameter name=value for the new version",
    )
    keys.set_defaults(handler=cmd_keys)

    encrypt = commands.add_parser(
        "encrypt",
        help="encrypt a .npy batch, an image or a folder of images",
        description="Encrypt a .npy batch (written as .npz), an image or a folder of images "
        "(written as PNG). The output carries the key version, the per-image nonces (fresh ones, "
        "reserved in the tenant's key store) and an integrity tag per image, so `decrypt` needs "
        "nothing else and refuses what it cannot decrypt exactly.",
    )
    _store_args(encrypt)
    encrypt.add_argument("--in", dest="input", required=True, type=Path)
    encrypt.add_argument("--out", dest="output", required=True, type=Path)
    encrypt.add_argument(
        "--key-version", type=positive_int, help="default: the newest active version"
    )
    encrypt.set_defaults(handler=cmd_encrypt)

    decrypt = commands.add_parser(
        "decrypt",
        help="decrypt what `patchveil encrypt` wrote (.npz, PNG or a folder of PNGs)",
        description="Decrypt what `patchveil encrypt` wrote, with the key version and nonces "
        "stored in it; refused, with nothing written, for another tenant's or key store's "
        "images, a retired key, or an image whose integrity tag does not match.",
    )
    _store_args(decrypt)
    decrypt.add_argument("--in", dest="input", required=True, type=Path)
    decrypt.add_argument("--out", dest="output", required=True, type=Path)
    decrypt.set_defaults(handler=cmd_decrypt)

    show = commands.add_parser("show", help="write plain and encrypted images side by side")
    _store_args(show)
    show.add_argument("--in", dest="input", required=True, type=Path)
    show.add_argument("--out", dest="output", required=True, type=Path)
    show.add_argument("--key-version", type=positive_int)
    show.add_argument(
        "--limit", type=bounded_int(1, 1024), default=8, help="at most this many images"
    )
    show.set_defaults(handler=cmd_show)

    ciphers = commands.add_parser("ciphers", help="list the ciphers and their key-space sizes")
    ciphers.add_argument("--block-size", type=image_side, default=4)
    ciphers.add_argument("--image-size", type=image_side, default=32)
    ciphers.set_defaults(handler=cmd_ciphers)
    data = commands.add_parser("data", help="prepare source data for tenants")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    split = data_commands.add_parser("split", help="split a labelled source into tenant folders")
    split.add_argument("--source", required=True, type=Path, help="CIFAR dir, image folder, .npz")
    split.add_argument(
        "--tenants", required=True, type=bounded_int(1, 10_000), help="number of tenants"
    )
    split.add_argument(
        "--dirichlet",
        type=bounded_float(1e-3, 1e6),
        help="non-IID: Dirichlet alpha per class (default: IID)",
    )
    split.add_argument("--split", default="train", help="which split of the source (train/test)")
    split.add_argument("--seed", type=seed, default=0)
    split.add_argument("--prefix", default="tenant-", help="tenant ids are PREFIX1..PREFIXn")
    split.add_argument("--out", required=True, type=Path)
    split.set_defaults(handler=cmd_data_split)

    from patchveil.cli_platform import add_platform_commands

    add_platform_commands(commands, _param)

    from patchveil.cli_audit import add_audit_commands

    add_audit_commands(commands, _param)

    from patchveil.cli_serve import add_serve_commands

    add_serve_commands(commands)

    from patchveil.cli_he import add_he_commands

    add_he_commands(commands)

    from patchveil.cli_clone import add_clone_commands

    add_clone_commands(commands)

    from patchveil.cli_federated import add_federated_commands

    add_federated_commands(commands)

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
