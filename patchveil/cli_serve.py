"""The query endpoint's commands: `patchveil serve start|deploy|risk|alerts` (platform operator)
and `patchveil query` (tenant: encrypts locally, sends only ciphertext)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from patchveil.cli_types import bounded_float, bounded_int, positive_int
from patchveil.errors import PatchveilError

OPERATOR_TOKEN_ENV = "PATCHVEIL_OPERATOR_TOKEN"


def _token_from(env: str, token_file: Path | None, what: str) -> str:
    if token_file is not None:
        if not token_file.is_file():
            raise PatchveilError(f"token file {token_file} does not exist")
        return token_file.read_text().strip()
    token = os.environ.get(env, "").strip()
    if not token:
        raise PatchveilError(f"no {what}: set {env} or pass --token-file FILE")
    return token


def _settings(args: argparse.Namespace) -> Any:
    from patchveil.serve.settings import ServeSettings

    return ServeSettings(
        he_models=() if args.no_he else (tuple(args.he_model) if args.he_model else None),
        host=args.host,
        port=args.port,
        model_replicas=args.replicas,
        defence=not args.no_defence,
        images_per_second=args.images_per_second,
        use_gpu=args.gpu,
        normal_volume=args.normal_volume,
        cloning_volume=args.cloning_volume,
    )


def cmd_serve_start(args: argparse.Namespace) -> int:
    from patchveil.cli_platform import _start_ray, _use_home

    settings = _settings(args)  # bad settings fail before Ray starts
    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.serve.model_host import resolve_model

    config = PlatformConfig.from_env()
    resolve_model(config.registry_url, args.model, args.version)  # a typo fails in a second
    from patchveil.serve.he_service import resolve_he_models

    resolve_he_models(config.home, settings.he_models)  # so does a missing HE model
    _start_ray(args)
    from patchveil.serve.runtime import start_endpoint, stop_endpoint

    endpoint = start_endpoint(config, args.model, args.version, settings)
    print(
        f"serving {endpoint.model_name} v{endpoint.model_version} at {endpoint.url} "
        f"(Open Inference Protocol: POST {endpoint.url}/v2/models/{endpoint.model_name}/infer)"
    )
    for name in endpoint.he_models:
        print(f"  homomorphic (CKKS): POST {endpoint.url}/v2/models/{name}-he/infer")
    if endpoint.operator_token:
        print(
            f"  operator token (shown once, stored only hashed; set {OPERATOR_TOKEN_ENV}): "
            f"{endpoint.operator_token}"
        )
    print("  swap the model with `patchveil serve deploy VERSION`; Ctrl-C stops the endpoint")
    sys.stdout.flush()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
    try:
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stop_endpoint()
    print("endpoint stopped")
    return 0


def cmd_serve_deploy(args: argparse.Namespace) -> int:
    from patchveil.cli_platform import _use_home

    _use_home(args, runs_flows=False)
    from patchveil.config import PlatformConfig
    from patchveil.serve.model_host import resolve_model
    from patchveil.serve.runtime import deploy_version, running_settings

    config = PlatformConfig.from_env()
    _, current = running_settings(config)
    resolve_model(config.registry_url, args.model or current.name, args.version)
    os.environ.setdefault("RAY_ADDRESS", "auto")  # the cluster the endpoint runs on
    from patchveil.pipelines.ray_runtime import ensure_ray

    ensure_ray(config)
    endpoint = deploy_version(config, args.version, args.model)
    print(f"now serving {endpoint.model_name} v{endpoint.model_version} at {endpoint.url}")
    return 0


def _admin(args: argparse.Namespace, path: str) -> dict[str, Any]:
    import httpx

    token = _token_from(OPERATOR_TOKEN_ENV, args.token_file, "operator token")
    try:
        response = httpx.get(
            f"{args.endpoint.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as error:
        raise PatchveilError(f"cannot reach {args.endpoint}: {type(error).__name__}") from None
    document = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code >= 400:
        raise PatchveilError(
            f"{args.endpoint} answered {response.status_code}: {document.get('error', response.text[:200])}"
        )
    return document


def cmd_serve_risk(args: argparse.Namespace) -> int:
    document = _admin(args, "/admin/risk" if args.action == "risk" else "/admin/alerts")
    if args.json:
        print(json.dumps(document, indent=2))
    elif args.action == "risk":
        for tenant in document["tenants"]:
            flag = " FLAGGED" if tenant["flagged"] else ""
            print(
                f"{tenant['tenant_id']}: risk {tenant['risk']:.2f}, {tenant['queries']} images{flag}"
            )
    else:
        for alert in document["alerts"]:
            print(f"{alert['tenant_id']}: {'; '.join(alert['alerts'])}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.imageio import read_images
    from patchveil.tenants.query_client import TOKEN_ENV, QueryClient, query_images

    token = _token_from(TOKEN_ENV, args.token_file, "API token")
    if args.he:
        from patchveil.cli_he import cmd_query_he

        return cmd_query_he(args, token)
    if args.packing:
        raise PatchveilError("--packing is for homomorphic queries: add --he")
    tenant = Tenant(args.tenant, args.store)
    images = read_images(args.images).images
    with QueryClient(args.endpoint, token) as client:
        answer = query_images(
            tenant, client, images, model=args.model, binary=not args.json_tensors
        )
    labels = answer.labels if answer.labels is not None else []
    if args.json:
        print(
            json.dumps(
                {
                    "model": answer.model_name,
                    "model_version": answer.model_version,
                    "labels": [int(label) for label in labels],
                    "confidences": [round(float(c), 4) for c in answer.confidences],
                }
            )
        )
        return 0
    for index, (label, confidence) in enumerate(zip(labels, answer.confidences, strict=True)):
        print(f"{index}: class {label} ({confidence:.2f})")
    print(f"{len(labels)} image(s) answered by {answer.model_name} v{answer.model_version}")
    return 0


def add_serve_commands(commands: argparse._SubParsersAction) -> None:
    """Register `serve` and `query` on the main parser."""
    from patchveil.cli_platform import _common

    serve = commands.add_parser("serve", help="the encrypted-query endpoint (Ray Serve, OIP v2)")
    actions = serve.add_subparsers(dest="serve_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="serve a model version until Ctrl-C")
    _common(start)
    start.add_argument("--model", required=True, help="model name (see `patchveil model list`)")
    start.add_argument("--version", type=positive_int, help="default: the newest")
    start.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    start.add_argument("--port", type=bounded_int(1, 65535), default=8000)
    start.add_argument("--replicas", type=bounded_int(1, 64), default=1, help="model replicas")
    start.add_argument(
        "--images-per-second",
        type=bounded_float(0.1, 1e7),
        default=2000.0,
        help="rate limit per tenant",
    )
    start.add_argument(
        "--no-defence", action="store_true", help="answer without intentional errors"
    )
    start.add_argument("--gpu", action="store_true", help="model replicas on GPUs")
    start.add_argument(
        "--normal-volume",
        type=bounded_int(1, 10**9),
        default=2_000,
        help="distinct images per tenant answered without intentional errors (default 2000)",
    )
    start.add_argument(
        "--cloning-volume",
        type=bounded_int(2, 10**9),
        default=20_000,
        help="distinct images per tenant treated as cloning: full errors, flagged (default 20000)",
    )
    start.add_argument(
        "--he-model",
        action="append",
        help="serve this homomorphic model as NAME-he (repeatable; default: every one in the home)",
    )
    start.add_argument("--no-he", action="store_true", help="serve no homomorphic model")
    start.add_argument(
        "--for-seconds", type=bounded_float(1, 1e7), help="stop after this long (demos, tests)"
    )
    start.set_defaults(handler=cmd_serve_start)

    deploy = actions.add_parser("deploy", help="swap the running endpoint to another model version")
    _common(deploy)
    deploy.add_argument("version", type=positive_int, help="model version to serve")
    deploy.add_argument("--model", help="another model name (default: the one being served)")
    deploy.set_defaults(handler=cmd_serve_deploy)

    for action, text in (
        ("risk", "clone risk per tenant"),
        ("alerts", "tenants flagged as cloners"),
    ):
        parser = actions.add_parser(action, help=f"{text} (operator token)")
        parser.add_argument("--endpoint", default="http://127.0.0.1:8000")
        parser.add_argument("--token-file", type=Path, help=f"default: ${OPERATOR_TOKEN_ENV}")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=cmd_serve_risk, action=action)

    query = commands.add_parser(
        "query", help="tenant: encrypt images locally and ask the endpoint for labels"
    )
    query.add_argument("--store", required=True, type=Path, help="the tenant's key store folder")
    query.add_argument("--tenant", required=True, help="tenant id")
    query.add_argument("--images", required=True, type=Path, help=".npy/.npz, an image or a folder")
    query.add_argument("--endpoint", default="http://127.0.0.1:8000")
    query.add_argument("--model", help="default: the one model the endpoint serves")
    query.add_argument("--token-file", type=Path, help="default: $PATCHVEIL_API_TOKEN")
    query.add_argument("--json-tensors", action="store_true", help="send JSON, not binary tensors")
    query.add_argument("--json", action="store_true", help="print JSON")
    query.add_argument(
        "--he",
        action="store_true",
        help="homomorphic: CKKS-encrypt here, the endpoint's NAME-he model never sees the label",
    )
    query.add_argument(
        "--packing",
        choices=("throughput", "latency"),
        help="with --he: one image per slot (default) or one image per ciphertext",
    )
    query.set_defaults(handler=cmd_query)
