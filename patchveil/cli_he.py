"""Homomorphic-query commands: `patchveil he train|list` (platform operator) and the tenant's
`patchveil query --he` (called from `cli_serve.cmd_query`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from patchveil.cli_types import bounded_int, positive_int
from patchveil.errors import PatchveilError


def cmd_he_train(args: argparse.Namespace) -> int:
    from patchveil.cli_platform import _use_home
    from patchveil.models.he_models import PRESETS, check_model_name

    if args.model not in PRESETS:  # before anything slow starts
        raise PatchveilError(
            f"no homomorphic model preset {args.model!r}; choose one of {', '.join(sorted(PRESETS))}"
        )
    check_model_name(args.name or args.model)
    dataset_name, dataset_version = _dataset(args.dataset)
    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.pipelines.he_training import train_he_model

    config = PlatformConfig.from_env()
    card = train_he_model(
        config,
        args.model,
        name=args.name,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        epochs=args.epochs,
        channels=args.channels,
        progress=None if args.json else lambda line: print(line, flush=True),
    )
    if args.json:
        print(json.dumps(card.to_json(), indent=2))
        return 0
    print(
        f"he model {card.name}: plain accuracy {100 * card.plain_accuracy:.1f}% on "
        f"{card.test_images} held-out images ({card.train_seconds:.0f} s) → "
        f"{config.home / 'he-models' / card.name}; `patchveil serve start` serves it at "
        f"/v2/models/{card.name}-he/infer"
    )
    return 0


def _dataset(text: str | None) -> tuple[str | None, int | None]:
    """`NAME` or `NAME:VERSION`."""
    if not text:
        return None, None
    name, sep, version = text.partition(":")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise PatchveilError(f"--dataset takes NAME or NAME:VERSION (VERSION ≥ 1), got {text!r}")
    return name, int(version)


def cmd_he_list(args: argparse.Namespace) -> int:
    from patchveil.cli_platform import _use_home

    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.models.he_models import list_he_models, load_he_model

    home = PlatformConfig.from_env().home
    cards = [load_he_model(home, name).card for name in list_he_models(home)]
    if args.json:
        print(json.dumps([card.to_json() for card in cards], indent=2))
    elif not cards:
        print(
            f"no homomorphic models under {home / 'he-models'}; train one with `patchveil he train`"
        )
    for card in [] if args.json else cards:
        side = "×".join(map(str, card.image_shape))
        print(
            f"{card.name}: {card.preset}, {side} input, {card.classes} classes, plain accuracy "
            f"{100 * card.plain_accuracy:.1f}% ({card.dataset})"
        )
    return 0


def read_he_images(path: Path) -> np.ndarray:
    """A `.npy` of float images in [0, 1] (`[N, H, W]` or `[N, H, W, C]`), or uint8 images
    (a `.npy`, an image file or a folder), for `patchveil query --he`."""
    if path.suffix.lower() == ".npy" and path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise PatchveilError(f"{path} is not a readable .npy file ({error})") from None
        if images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating):
            return images
        raise PatchveilError(
            f"{path} must hold uint8 images or floats in [0, 1], got {images.dtype}"
        )
    from patchveil.tenants.imageio import read_images

    return read_images(path).images


def cmd_query_he(args: argparse.Namespace, token: str) -> int:
    """`patchveil query --he`: CKKS-encrypt locally, the endpoint evaluates, decrypt here."""
    from patchveil.tenants.he_client import query_he_model
    from patchveil.tenants.keystore import KeyStore
    from patchveil.tenants.query_client import QueryClient, QueryError

    images = read_he_images(args.images)
    store = KeyStore(args.store)
    with QueryClient(args.endpoint, token) as client:
        model = args.model
        if model is None:
            served = client.server().get("he_models") or []
            if len(served) != 1:
                raise QueryError(
                    f"{client.endpoint} serves {len(served)} homomorphic models "
                    f"({', '.join(served) or 'none'}); name one with --model"
                )
            model = served[0]
        model = model.removesuffix("-he")
        answer = query_he_model(store, args.tenant, client, model, images, args.packing)
    labels = [int(label) for label in answer.labels]
    if args.json:
        print(json.dumps({"model": answer.model_name, "packing": answer.packing, "labels": labels}))
        return 0
    for index, label in enumerate(labels):
        print(f"{index}: class {label}")
    uploaded = "uploaded" if answer.uploaded_context else "already held by the endpoint"
    print(
        f"{len(labels)} image(s) answered by {answer.model_name} under CKKS ({answer.packing} "
        f"packing; public context {uploaded}); the endpoint saw neither images nor labels"
    )
    return 0


def add_he_commands(commands: argparse._SubParsersAction) -> None:
    """Register `he` on the main parser."""
    from patchveil.cli_platform import _common

    he = commands.add_parser("he", help="homomorphic (CKKS) models: train, list")
    actions = he.add_subparsers(dest="he_action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train a square-activation model for CKKS queries")
    _common(train)
    train.add_argument(
        "--model",
        required=True,
        # Named here, not imported from models.he_models: that would load torch for every
        # `patchveil` command. An unknown name is refused with the registered list.
        help="preset: digits (CryptoNets on the UCI digits) or bag-of-patches (on --dataset)",
    )
    train.add_argument("--name", help="model name (default: the preset's); served as NAME-he")
    train.add_argument(
        "--dataset", help="NAME or NAME:VERSION of a published dataset (bag-of-patches)"
    )
    train.add_argument("--epochs", type=bounded_int(1, 1000), help="default: the preset's")
    train.add_argument("--channels", type=positive_int, help="default: the preset's")
    train.set_defaults(handler=cmd_he_train)

    listing = actions.add_parser("list", help="the trained homomorphic models in the home")
    _common(listing)
    listing.set_defaults(handler=cmd_he_list)
