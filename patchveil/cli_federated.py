"""`patchveil federated ...`: FedAvg/FedKL rounds over the tenants' own images, and the audit of
what one shared update leaks. Imports neither torch nor ray until a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from patchveil.cli_types import bounded_int
from patchveil.errors import PatchveilError

# Named here in words, so that building the parser imports no torch (the commands check them).
MODELS_HELP = "lenet, resnet18 or vit"
ATTACKS_HELP = (
    "dlg, idlg, inverting_gradients, adaptive_reinitialise, adaptive_optimise (repeat; default all)"
)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    """`ID=VALUE` arguments as a dict (each id once)."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise PatchveilError(f"{what} must be TENANT=VALUE, got {value!r}")
        if name in pairs:
            raise PatchveilError(f"{what} names tenant {name!r} twice")
        pairs[name] = rest
    return pairs


def cmd_federated_train(args: argparse.Namespace) -> int:
    from patchveil.pipelines.federated import federated_training

    tenants = _pairs(args.tenant, "--tenant")
    result = federated_training(
        rounds=args.rounds,
        clients_per_round=args.clients_per_round,
        tenants=tenants,
        run_name=args.run_name,
        model=args.model,
        width=args.width,
        key_lock=not args.no_lock,
        key_dim=args.key_dim,
        image_size=args.image_size,
        num_classes=args.num_classes,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        key_stores=_pairs(args.key_store, "--key-store"),
        evaluation_sources=_pairs(args.evaluate, "--evaluate"),
        encrypt=args.encrypt,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        resumed = (
            f" (resumed after round {result['resumed_after']})" if result["resumed_after"] else ""
        )
        print(
            f"run {result['run_name']}: rounds {result['rounds_run']}{resumed} → "
            f"{result['checkpoint_dir']}"
            + "".join(f"\n  {t}: accuracy {a:.3f}" for t, a in result["tenant_accuracy"].items())
        )
    return 0


def cmd_federated_leakage(args: argparse.Namespace) -> int:
    """A throwaway tenant (a fresh key, in memory) shares one update per image; every attack
    tries to invert it, with and without the lock."""
    import copy

    import numpy as np
    import torch

    from patchveil.audit.gradient_leakage import (
        ADAPTIVE_ATTACKS,
        ATTACKS,
        AttackBudget,
        client_gradient,
        run_attack,
        to_tensor,
    )
    from patchveil.models.key_lock import KeyLockConfig, set_model_key
    from patchveil.models.small_nets import NetSpec, create_net
    from patchveil.tenants.key_lock import key_vector
    from patchveil.tenants.keys import CipherSpec, Key
    from patchveil.tenants.loaders import load_source

    data = load_source(args.source, args.split)
    if data.image_size != args.image_size:
        raise PatchveilError(
            f"{args.source} holds {data.image_size}-pixel images; pass --image-size {data.image_size}"
        )
    attacks = args.attack or list(ATTACKS)
    budget = AttackBudget(args.lbfgs_steps, args.adam_steps, seed=args.seed)
    key = Key.generate("auditor-tenant", CipherSpec("plain", 1, data.image_size))
    rows: list[dict[str, Any]] = []
    for locked in (False, True):
        lock = KeyLockConfig() if locked else None
        torch.manual_seed(args.seed)
        spec = NetSpec(args.model, int(data.labels.max()) + 1, data.image_size, args.width, lock)
        global_model = create_net(spec)
        tenant_model = copy.deepcopy(global_model)
        if lock is not None:
            set_model_key(tenant_model, torch.from_numpy(key_vector(key, lock.key_dim)))
        for attack in attacks:
            if attack in ADAPTIVE_ATTACKS and not locked:
                continue
            scores = [
                run_attack(
                    attack,
                    global_model,
                    client_gradient(tenant_model, to_tensor(data.images[i]), int(data.labels[i])),
                    data.images[i],
                    spec.num_classes,
                    budget,
                )
                for i in range(min(args.images, len(data)))
            ]
            rows.append(
                {
                    "model": args.model,
                    "attack": attack,
                    "lock": locked,
                    "ssim": float(np.mean([s.ssim for s in scores])),
                    "psnr": float(np.mean([s.psnr for s in scores])),
                }
            )
    if args.json:
        print(json.dumps({"data_range": 255, "attacks": rows}, indent=2))
    else:
        for row in rows:
            print(
                f"{row['model']} {row['attack']:22s} lock={'yes' if row['lock'] else 'no ':3s} "
                f"SSIM {row['ssim']:.3f}  PSNR {row['psnr']:.1f} dB (uint8, data range 255)"
            )
    return 0


def add_federated_commands(commands: argparse._SubParsersAction) -> None:
    """The `federated` command and its actions."""
    federated = commands.add_parser(
        "federated", help="train where the data lives (FedAvg, FedKL key lock); audit the updates"
    )
    actions = federated.add_subparsers(dest="federated_command", required=True, metavar="ACTION")

    train = actions.add_parser(
        "train", help="FedAvg rounds over tenant clients on Ray (Prefect flow)"
    )
    train.add_argument("--tenant", action="append", required=True, help="TENANT=SOURCE (repeat)")
    train.add_argument("--key-store", action="append", default=[], help="TENANT=FOLDER")
    train.add_argument("--evaluate", action="append", default=[], help="TENANT=HELD-OUT SOURCE")
    train.add_argument("--rounds", type=bounded_int(1, 10_000), default=5)
    train.add_argument("--clients-per-round", type=bounded_int(1, 10_000), default=2)
    train.add_argument("--run-name", default="federated")
    train.add_argument("--model", default="lenet", help=MODELS_HELP)
    train.add_argument("--width", type=bounded_int(1, 4096), default=None)
    train.add_argument("--no-lock", action="store_true", help="plain FedAvg (no FedKL key lock)")
    train.add_argument("--key-dim", type=bounded_int(1, 4096), default=64)
    train.add_argument("--image-size", type=bounded_int(1, 4096), default=32)
    train.add_argument("--num-classes", type=bounded_int(1, 100_000), default=10)
    train.add_argument("--local-epochs", type=bounded_int(1, 1000), default=1)
    train.add_argument("--batch-size", type=bounded_int(2, 65_536), default=32)
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--encrypt", action="store_true", help="tenants train on their ciphertext")
    train.add_argument("--json", action="store_true")
    train.set_defaults(handler=cmd_federated_train)

    leakage = actions.add_parser(
        "leakage", help="invert one shared update per image (DLG, iDLG, IG, adaptive), lock or not"
    )
    leakage.add_argument("--source", required=True, type=Path, help="labelled images to attack")
    leakage.add_argument("--split", default="test")
    leakage.add_argument("--images", type=bounded_int(1, 1000), default=1)
    leakage.add_argument("--model", default="lenet", help=MODELS_HELP)
    leakage.add_argument("--width", type=bounded_int(1, 4096), default=None)
    leakage.add_argument("--image-size", type=bounded_int(1, 4096), default=32)
    leakage.add_argument("--attack", action="append", default=[], help=ATTACKS_HELP)
    leakage.add_argument("--lbfgs-steps", type=bounded_int(1, 100_000), default=40)
    leakage.add_argument("--adam-steps", type=bounded_int(1, 100_000), default=300)
    leakage.add_argument("--seed", type=int, default=0)
    leakage.add_argument("--json", action="store_true")
    leakage.set_defaults(handler=cmd_federated_leakage)
