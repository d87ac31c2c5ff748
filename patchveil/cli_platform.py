"""The platform's commands of `patchveil`: tenants, datasets, scheduled onboarding, training.

They drive the Prefect flows in `patchveil.pipelines`; Prefect, Ray and torch are imported only
when a command runs, so `patchveil --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from patchveil.cli_types import bounded_float, bounded_int, image_side, positive_int, seed
from patchveil.errors import PatchveilError


def _use_home(args: argparse.Namespace, runs_flows: bool = True) -> None:
    """Point the flows (which read PlatformConfig.from_env()) and Prefect at the platform home;
    for a command that runs flows, Prefect's logs go to `<home>/logs/patchveil.log`, not the
    console, unless --verbose."""
    if getattr(args, "home", None):
        os.environ["PATCHVEIL_HOME"] = str(Path(args.home).resolve())
    from patchveil.config import PlatformConfig
    from patchveil.pipelines.prefect_home import use_platform_home_for_prefect

    config = PlatformConfig.from_env()
    use_platform_home_for_prefect(config)
    if runs_flows and not getattr(args, "verbose", False):
        from patchveil.console import quiet_services

        quiet_services(config.log_dir / "patchveil.log")


def _start_ray(args: argparse.Namespace) -> None:
    """Start (or join) Ray for a command: workers' output on the console only with --verbose
    (training echoes its per-epoch lines itself); Ray's own loggers at WARNING unless --verbose."""
    from patchveil.config import PlatformConfig
    from patchveil.console import QUIET_RAY_LOG_LEVEL
    from patchveil.pipelines.ray_runtime import ensure_ray

    verbose = getattr(args, "verbose", False)
    ensure_ray(
        PlatformConfig.from_env(),
        log_to_driver=verbose,
        log_level=None if verbose else QUIET_RAY_LOG_LEVEL,
    )


def _print(result: Any, as_json: bool, text: str) -> None:
    print(json.dumps(result, indent=2, default=str) if as_json else text)


def _params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def check_onboarding_arguments(args: argparse.Namespace) -> None:
    """What can be checked before Prefect and Ray start: a mistake fails in a second, one line."""
    if args.config:
        if not Path(args.config).is_file():
            raise PatchveilError(f"onboarding file {args.config} does not exist")
        return
    if args.preset:
        from patchveil.presets import apply_preset

        args.cipher, args.block_size, preset_params = apply_preset(
            args.preset, args.cipher, args.block_size, _params(args.param)
        )
        args.param = list(preset_params.items())
    missing = [
        name for name in ("tenant", "source", "cipher", "block_size") if not getattr(args, name)
    ]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise PatchveilError(f"tenant onboard needs {flags} (or --config FILE for many tenants)")
    from patchveil.config import check_tenant_id
    from patchveil.tenants.ciphers import cipher_class
    from patchveil.tenants.loaders import describe_layouts

    check_tenant_id(args.tenant)
    if not Path(args.source).exists():
        raise PatchveilError(f"source {args.source} does not exist; expected {describe_layouts()}")
    if args.cipher == "plain":
        raise PatchveilError(
            "cipher 'plain' does not encrypt, and plain pixels never enter the shared dataset; "
            "choose an encrypting cipher (e.g. disposable, conventional)"
        )
    cipher_class(args.cipher).resolve_params(dict(args.param))  # unknown names, bad values


def cmd_tenant_onboard(args: argparse.Namespace) -> int:
    check_onboarding_arguments(args)
    _use_home(args)
    _start_ray(args)
    from patchveil.pipelines.onboarding import onboard_tenant, onboard_tenants

    if args.config:
        result = onboard_tenants(str(args.config))
        lines = [_onboarded_line(tenant) for tenant in result["tenants"]]
        _print(result, args.json, "\n".join(lines))
        return 0
    result = onboard_tenant(
        tenant_id=args.tenant,
        source=str(args.source),
        cipher=args.cipher,
        block_size=args.block_size,
        params=_params(args.param),
        key_store=str(args.key_store) if args.key_store else None,
        shard_size=args.shard_size,
        validation_fraction=args.validation_fraction,
        augment_variants=args.augment_variants,
        dataset_name=args.dataset,
    )
    _print(result, args.json, _onboarded_line(result))
    return 0


def _onboarded_line(tenant: dict[str, Any]) -> str:
    line = (
        f"{tenant['tenant_id']}: {tenant['status']}, {tenant.get('images', '?')} images → dataset "
        f"{tenant.get('dataset')} v{tenant.get('dataset_version')} (key version "
        f"{tenant.get('key_version')})"
    )
    if tenant.get("api_token"):
        line += f"\n  API token (shown once, stored only hashed): {tenant['api_token']}"
    return line


def cmd_tenant_list(args: argparse.Namespace) -> int:
    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.registry import Registry

    with Registry.from_config(PlatformConfig.from_env()) as registry:
        tenants = registry.list_tenants()
    rows = [
        {
            "tenant_id": tenant.tenant_id,
            "cipher": tenant.cipher,
            "block_size": tenant.block_size,
            "image_size": tenant.image_size,
            "key_version": tenant.key_version,
            "status": tenant.status,
            "created_at": tenant.created_at.isoformat(),
        }
        for tenant in tenants
    ]
    text = "\n".join(
        f"{row['tenant_id']:<16} {row['cipher']:<13} block {row['block_size']:<3} key v"
        f"{row['key_version']:<3} {row['status']}"
        for row in rows
    )
    _print(rows, args.json, text or "no tenants")
    return 0


def cmd_tenant_rotate(args: argparse.Namespace) -> int:
    _use_home(args)
    _start_ray(args)
    from patchveil.pipelines.rotation import rotate_tenant_key

    result = rotate_tenant_key(args.tenant, str(args.key_store) if args.key_store else None)
    _print(
        result,
        args.json,
        f"{args.tenant}: key version {result['previous_key_version']} → {result['key_version']}, "
        f"{result['retired_shards']} old shards retired",
    )
    return 0


def cmd_tenant_remove(args: argparse.Namespace) -> int:
    _use_home(args)
    _start_ray(args)
    from patchveil.pipelines.removal import offboard_tenant

    result = offboard_tenant(args.tenant)
    lines = [f"{args.tenant}: removed ({result['retired_shards']} shard(s) retired)"]
    lines += [
        f"  dataset {summary['dataset']}: new version {summary['version']} without it"
        for summary in result["datasets"]
    ]
    lines += [
        f"  dataset {name}: no shard left; training on it is refused until a tenant is onboarded"
        for name in result["datasets_left_without_shards"]
    ]
    _print(result, args.json, "\n".join(lines))
    return 0


def cmd_dataset_list(args: argparse.Namespace) -> int:
    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.datasets.manifest import list_versions

    versions = list_versions(PlatformConfig.from_env().dataset_root)
    rows = [version.to_json() for version in versions]
    text = "\n".join(
        f"{version.name} v{version.version}: {version.rows} rows in {len(version.shards)} shards, "
        f"tenants {', '.join(version.tenant_ids)} ({version.cipher}, block {version.block_size})"
        for version in versions
    )
    _print(rows, args.json, text or "no datasets")
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.registry import Registry

    with Registry.from_config(PlatformConfig.from_env()) as registry:
        models = registry.list_model_versions()
    rows = [
        {
            "name": model.name,
            "version": model.version,
            "dataset": f"{model.dataset_name} v{model.dataset_version}",
            "checkpoint_uri": model.checkpoint_uri,
            "tenant_accuracy": model.model_card.get("tenant_accuracy"),
            "created_at": model.created_at.isoformat(),
        }
        for model in models
    ]
    text = "\n".join(
        f"{row['name']} v{row['version']} on {row['dataset']}: {row['tenant_accuracy']}"
        for row in rows
    )
    _print(rows, args.json, text or "no models")
    return 0


def cmd_onboarding(args: argparse.Namespace) -> int:
    _use_home(args)
    _start_ray(args)
    from patchveil.pipelines.inbox import ingest_inboxes, serve_onboarding

    if args.action == "serve":
        serve_onboarding(args.cron)
        return 0
    result = ingest_inboxes(shard_size=args.shard_size)
    _print(result, args.json, json.dumps(result, indent=2, default=str))
    return 0


#: `patchveil train`'s defaults where neither the command line nor a preset sets a value.
_TRAINING_DEFAULTS = {"variant": "standard", "learning_rate": 1e-3, "block_cutmix": 0.0}


def _training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Model and training settings: the command line's, filled from `--preset` where given,
    then the defaults."""
    from patchveil.presets import TRAINING_FIELDS, preset_training

    given = {field: getattr(args, field) for field in TRAINING_FIELDS}
    settings = preset_training(args.preset, given) if args.preset else given
    return {
        field: _TRAINING_DEFAULTS.get(field) if value is None else value
        for field, value in settings.items()
    }


def cmd_train(args: argparse.Namespace) -> int:
    _use_home(args)
    from patchveil.pipelines.training import train_shared_model

    model = _training_settings(args)  # a contradicted preset fails before Ray starts
    _start_ray(args)
    result = train_shared_model(
        dataset_name=args.dataset,
        dataset_version=args.dataset_version,
        variant=model["variant"],
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=model["learning_rate"],
        mixup_alpha=args.mixup,
        block_cutmix_prob=model["block_cutmix"],
        token_dropout=args.token_dropout,
        seed=args.seed,
        num_workers=args.workers,
        use_gpu=args.gpu,
        invariance_group=model["invariance_group"],
        cpus_per_worker=args.cpus_per_worker,
        position_window=model["position_window"],
        orbit_pool=model["orbit_pool"],
        echo_progress=True,  # per-epoch lines, without the workers' other output
    )
    accuracy = ", ".join(f"{t} {a:.1%}" for t, a in sorted(result["tenant_accuracy"].items()))
    _print(
        result,
        args.json,
        f"model {result['model_name']} v{result['model_version']} ({result['epochs']} epochs, "
        f"{result['train_seconds']:.0f} s)\n  validation accuracy per tenant: {accuracy}\n"
        f"  checkpoint: {result['checkpoint_uri']}",
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import sys

    from patchveil.experiments.frontier import options_of, search_of

    options = options_of(args)
    search_of(options)  # a bad space or start point: one line, before Prefect and Ray start
    from patchveil.pipelines.frontier import tune_privacy_frontier

    _use_home(args)
    result = tune_privacy_frontier(options, command=["patchveil", *sys.argv[1:]])
    default = result["default_preset"] or "none: no trial kept the attack below the bar"
    _print(
        result,
        args.json,
        f"{result['trials']} trials, front: {', '.join(result['pareto']) or 'empty'}\n"
        f"  default preset: {default}\n  results: {result['out']}",
    )
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home", type=Path, help="platform home (default: $PATCHVEIL_HOME or ./.patchveil)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Prefect's and Ray's logs here (default: <home>/logs/patchveil.log)",
    )


def add_platform_commands(commands: argparse._SubParsersAction, param_type: Any) -> None:
    """Register `tenant`, `dataset`, `model`, `onboarding`, `tune` and `train` on the main parser."""
    tenant = commands.add_parser(
        "tenant", help="onboard, list, rotate the key of, or remove tenants"
    )
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")

    onboard = tenant_commands.add_parser(
        "onboard", help="encrypt a tenant's images into the shared dataset"
    )
    _common(onboard)
    onboard.add_argument("--tenant", help="tenant id")
    onboard.add_argument("--source", type=Path, help="CIFAR dir, image folder, .npy/.npz")
    onboard.add_argument("--cipher", help="cipher name (see `patchveil ciphers`)")
    onboard.add_argument("--block-size", type=image_side, help="block size = the ViT's patch size")
    onboard.add_argument(
        "--param", action="append", type=param_type, default=[], help="cipher parameter name=value"
    )
    onboard.add_argument(
        "--key-store", type=Path, help="the tenant's key store (default: <home>/tenants/<id>/keys)"
    )
    onboard.add_argument("--shard-size", type=bounded_int(1, 1_000_000), default=1000)
    onboard.add_argument("--validation-fraction", type=bounded_float(0.0, 0.9), default=0.1)
    onboard.add_argument(
        "--augment-variants",
        type=bounded_int(0, 64),
        default=0,
        help="K augmented copies per image, made before encryption",
    )
    onboard.add_argument("--dataset", help="dataset name (default: <cipher>-b<block>-s<size>)")
    onboard.add_argument("--config", type=Path, help="YAML/JSON file listing many tenants")
    onboard.add_argument(
        "--preset",
        help="cipher, block size and parameters of a measured preset (`patchveil ciphers`)",
    )
    onboard.set_defaults(handler=cmd_tenant_onboard)

    listing = tenant_commands.add_parser("list", help="registered tenants")
    _common(listing)
    listing.set_defaults(handler=cmd_tenant_list)

    rotate = tenant_commands.add_parser(
        "rotate-key", help="new key version; re-encrypt the tenant's shards"
    )
    _common(rotate)
    rotate.add_argument("--tenant", required=True)
    rotate.add_argument("--key-store", type=Path)
    rotate.set_defaults(handler=cmd_tenant_rotate)

    remove = tenant_commands.add_parser(
        "remove", help="offboard a tenant: its shards leave the dataset"
    )
    _common(remove)
    remove.add_argument("--tenant", required=True)
    remove.set_defaults(handler=cmd_tenant_remove)

    dataset = commands.add_parser("dataset", help="encrypted dataset versions")
    dataset_commands = dataset.add_subparsers(
        dest="dataset_command", required=True, metavar="ACTION"
    )
    dataset_list = dataset_commands.add_parser(
        "list", help="every dataset version and its manifest"
    )
    _common(dataset_list)
    dataset_list.set_defaults(handler=cmd_dataset_list)

    model = commands.add_parser("model", help="trained model versions")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    model_list = model_commands.add_parser("list", help="every model version and its accuracy")
    _common(model_list)
    model_list.set_defaults(handler=cmd_model_list)

    onboarding = commands.add_parser(
        "onboarding", help="ingest tenants' inbox folders (once or on a schedule)"
    )
    onboarding.add_argument("action", choices=["run", "serve"])
    _common(onboarding)
    onboarding.add_argument("--cron", default="*/10 * * * *", help="schedule for `serve`")
    onboarding.add_argument("--shard-size", type=bounded_int(1, 1_000_000), default=1000)
    onboarding.set_defaults(handler=cmd_onboarding)

    tune = commands.add_parser(
        "tune", help="map accuracy against attack success with Ray Tune; writes the presets"
    )
    _common(tune)
    from patchveil.experiments.options import add_frontier_arguments

    add_frontier_arguments(tune)
    tune.set_defaults(handler=cmd_tune)

    train = commands.add_parser(
        "train", help="train the shared ViT on a dataset version (Ray Train)"
    )
    _common(train)
    train.add_argument(
        "--dataset", required=True, help="dataset name (see `patchveil dataset list`)"
    )
    train.add_argument("--dataset-version", type=positive_int, help="default: the newest")
    train.add_argument(
        "--preset",
        help="train as a preset was measured (variant, its parameters, learning rate, block "
        "cutmix; see `patchveil ciphers`); options given must agree with it",
    )
    train.add_argument(
        "--variant", help="standard (default), position_free, invariant or window_position"
    )
    train.add_argument(
        "--invariance-group",
        help="invariant variant: the cipher's block group (np, np_cs, np_cs_rf, px, np_px, ...)",
    )
    train.add_argument(
        "--orbit-pool", help="invariant embeddings: mean (default), max, mean_max or sorted"
    )
    train.add_argument(
        "--position-window",
        type=bounded_int(1, 1024),
        help="window_position variant: the disposable cipher's window (blocks per window side)",
    )
    train.add_argument("--size", default="cpu", help="cpu, tiny, small, base (test for smoke runs)")
    train.add_argument("--epochs", type=bounded_int(1, 10_000), default=10)
    train.add_argument("--batch-size", type=bounded_int(1, 65_536), default=128)
    train.add_argument("--learning-rate", type=bounded_float(1e-8, 10.0), help="default 1e-3")
    train.add_argument(
        "--mixup",
        type=bounded_float(0.0, 100.0),
        default=0.0,
        help="mixup alpha within a tenant's key",
    )
    train.add_argument(
        "--block-cutmix",
        type=bounded_float(0.0, 1.0),
        help="probability of block cutmix (default 0)",
    )
    train.add_argument("--token-dropout", type=bounded_float(0.0, 0.9), default=0.0)
    train.add_argument("--seed", type=seed, default=0)
    train.add_argument("--workers", type=bounded_int(0, 1024), default=1, help="Ray Train workers")
    train.add_argument(
        "--cpus-per-worker",
        type=bounded_float(0.1, 256.0),
        default=1.0,
        help="CPUs (torch threads) per worker",
    )
    train.add_argument("--gpu", action="store_true", help="train on GPUs")
    train.set_defaults(handler=cmd_train)
