"""`patchveil clone-check`: is a suspect model a clone of a served model version? (operator)

The operator probes the suspect with plain images it holds, answers the same probes with our
model on their encryption (under a tenant key the operator holds, e.g. its own test tenant's),
and compares, calibrated against independently trained models (`--null`) or a saved calibration.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from patchveil.cli_types import bounded_float, positive_int
from patchveil.errors import PatchveilError

SUSPECT_TOKEN_ENV = "PATCHVEIL_SUSPECT_TOKEN"


def _check_source(where: str, what: str) -> None:
    if not where.startswith(("http://", "https://")) and not Path(where).is_file():
        raise PatchveilError(f"{what} {where}: no such file (or give an http(s):// URL)")


def _our_answers(args: argparse.Namespace, probes: Any) -> tuple[Any, Any, int]:
    """Our model's probabilities on the probes' encryption, our watermark labels, the version."""
    from patchveil.cli_platform import _use_home
    from patchveil.config import PlatformConfig
    from patchveil.serve.clone_check import watermark_labels
    from patchveil.serve.defence import CloneDefence, DefenceSettings
    from patchveil.serve.model_host import LoadedModel, ModelRef, resolve_model
    from patchveil.serve.secrets import server_secret
    from patchveil.serve.settings import serve_home
    from patchveil.tenants.client import Tenant

    _use_home(args, runs_flows=False)
    config = PlatformConfig.from_env()
    record = resolve_model(config.registry_url, args.model, args.version)
    model = LoadedModel(ModelRef(record.name, record.version, record.checkpoint_uri))
    ciphertexts = Tenant(args.tenant, args.store).encrypt_query(probes).images
    forward = model.forward(ciphertexts)
    probabilities = forward.probabilities.astype("float64")
    defence = CloneDefence.for_model(
        server_secret(serve_home(config)),
        DefenceSettings(),
        model.head_weight(),
        reference_embeddings=model.reference_embeddings,
    )
    mask, labels = defence.watermark(forward.embeddings, probabilities)
    return probabilities, watermark_labels(mask, labels), record.version


def _probe_labels(path: Path | None, count: int) -> Any:
    """The probes' true labels (.npy of `count` integers), or None."""
    if path is None:
        return None
    import numpy as np

    if not path.is_file():
        raise PatchveilError(f"probe labels file {path} does not exist")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PatchveilError(f"{path} is not a readable .npy file ({error})") from None
    if labels.ndim != 1 or len(labels) != count or labels.dtype.kind not in "iu":
        raise PatchveilError(
            f"{path} must hold {count} integer labels (one per probe), got {labels.dtype} "
            f"{list(labels.shape)}"
        )
    return labels.astype(np.int64)


def cmd_clone_check(args: argparse.Namespace) -> int:
    from patchveil.serve import ownership
    from patchveil.serve.clone_check import (
        calibrate_on,
        load_calibration,
        open_suspect,
        probe_digest,
        save_calibration,
        scores_of,
    )
    from patchveil.tenants.imageio import read_images

    _check_source(args.suspect, "suspect")
    for null in args.null:
        _check_source(null, "null model")
    if not args.null and args.calibration is None:
        raise PatchveilError(
            "name independently trained models with --null (twice or more) or a saved "
            "--calibration FILE: without a null, agreement has no scale"
        )
    if args.calibration is not None and not args.calibration.is_file():
        raise PatchveilError(f"calibration file {args.calibration} does not exist")
    probes = read_images(args.probes).images
    true_labels = _probe_labels(args.probe_labels, len(probes))
    token = os.environ.get(SUSPECT_TOKEN_ENV) or None
    ours, watermark, version = _our_answers(args, probes)
    digest = probe_digest(probes)
    if args.null:
        nulls = [open_suspect(where, args.suspect_model, token) for where in args.null]
        calibration, _ = calibrate_on(nulls, probes, ours, watermark, true_labels)
        if args.save_calibration is not None:
            save_calibration(args.save_calibration, calibration, args.model, version, digest)
    else:
        calibration = load_calibration(args.calibration, args.model, version, digest)
    suspect = open_suspect(args.suspect, args.suspect_model, token)
    scores = scores_of(suspect, probes, ours, watermark, true_labels)
    decision = ownership.decide(
        scores, calibration, threshold=args.threshold, significance=args.significance
    )
    report = {
        "model": args.model,
        "model_version": version,
        "suspect": args.suspect,
        "probes": len(probes),
        "null_models": calibration.models,
        **decision.to_json(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    verdict = "CLONE" if decision.is_clone else "not shown to be a clone"
    shared = decision.shared_errors
    print(
        f"{args.suspect}: {verdict} of {args.model} v{version} (shared-error p = "
        f"{shared.p_value:.2g}, a clone at ≤ {decision.significance:g}; watermark p = "
        f"{decision.watermark_p_value:.2g})"
    )
    print(
        f"  {len(probes)} probes{' with true labels' if true_labels is not None else ''}: "
        f"repeats {shared.rate:.1%} of {shared.error_probes} odd answers of ours (null "
        f"{shared.null_rate:.1%}); label agreement {scores.label_agreement:.3f}; mean z "
        f"{decision.score:.2f} (reported, not deciding); watermark "
        f"{scores.watermark_hits}/{scores.watermark_probes}; null of {calibration.models} models"
    )
    for reason in decision.reasons:
        print(f"  - {reason}")
    return 0


def add_clone_commands(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "clone-check",
        help="is a suspect model a clone of a served model? (operator)",
        description=(
            "Probe a suspect (OIP v2 URL, TorchScript file, or .npz of its answers) with plain "
            "images, compare with our model's answers on their encryption, and decide against "
            f"independently trained models. A suspect URL's Bearer token: ${SUSPECT_TOKEN_ENV}."
        ),
    )
    check.add_argument("--home", help="platform home (default: $PATCHVEIL_HOME or ./.patchveil)")
    check.add_argument("--model", required=True, help="our model name (see `patchveil model list`)")
    check.add_argument(
        "--version", type=positive_int, help="our model version (default: the newest)"
    )
    check.add_argument("--suspect", required=True, help="http(s)://… , model.pt or answers.npz")
    check.add_argument(
        "--suspect-model", help="model name at a suspect URL (default: its only one)"
    )
    check.add_argument(
        "--probes", required=True, type=Path, help="plain probe images: .npy/.npz, image folder"
    )
    check.add_argument("--store", required=True, type=Path, help="a key store the operator holds")
    check.add_argument(
        "--tenant", required=True, help="whose key encrypts the probes for our model"
    )
    check.add_argument(
        "--null",
        action="append",
        default=[],
        metavar="SUSPECT",
        help="an independently trained model (URL, .pt, .npz); give two or more",
    )
    check.add_argument("--calibration", type=Path, help="a calibration saved by an earlier check")
    check.add_argument("--save-calibration", type=Path, help="write the --null calibration here")
    check.add_argument(
        "--probe-labels",
        type=Path,
        help="the probes' true labels (.npy of integers): the shared-error test then counts "
        "only our wrong answers (stronger, and fair to a more accurate honest model)",
    )
    check.add_argument(
        "--significance",
        type=bounded_float(1e-12, 0.5),
        default=1e-3,
        help="the shared-error test's p-value that names a clone (default 1e-3)",
    )
    check.add_argument(
        "--threshold",
        type=bounded_float(0.0, 100.0),
        default=3.0,
        help="the mean z-score's reference line (reported beside the verdict, not deciding)",
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=cmd_clone_check)
