"""Command-line options of the experiments, kept free of torch so `patchveil --help` is fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from patchveil.cli_types import bounded_float, bounded_int, image_side, positive_int, seed

RESULTS = Path("bench/results")


def add_paper_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=bounded_int(1, 10_000), default=10)
    parser.add_argument("--size", default="cpu", help="model size (cpu, tiny, small, base, test)")
    parser.add_argument("--block-size", type=image_side, default=4)
    parser.add_argument("--batch-size", type=bounded_int(1, 65_536), default=128)
    parser.add_argument("--tenants", type=bounded_int(1, 10_000), default=4)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--rows", nargs="*", help="only these rows (default: all)")
    parser.add_argument(
        "--limit", type=positive_int, help="use only this many training images (smoke runs)"
    )
    parser.add_argument("--gpu", action="store_true", help="train on CUDA")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="paper_table", help="file stem of the outputs")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows an earlier run with the same --name and settings finished",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the Markdown and chart of --name from its JSON (no training)",
    )
    parser.add_argument("--data", type=Path, help="CIFAR-10 folder (default: the shared subset)")


def add_jigsaw_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=bounded_int(1, 100_000), default=200)
    parser.add_argument("--block-size", type=image_side, default=4)
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[0, 4, 2], help="0: the whole image"
    )
    parser.add_argument(
        "--groups",
        nargs="*",
        default=["rf", "np_cs"],
        help="in-block groups to audit with a whole-image block order",
    )
    parser.add_argument("--show", type=bounded_int(0, 64), default=8, help="images in the picture")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data", type=Path, help="CIFAR-10 folder (default: the shared subset)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="jigsaw_attack")


#: Groups whose group-aware jigsaw costs a minute or more per CIFAR image (|G| = 48 and 96
#: versions per piece: cs_rf, np_cs_rf) are searched only when asked for (`--groups`); so are the
#: colour-shuffled pixel groups (cs_px, np_cs_px: 6 and 12 versions of every piece), not yet timed.
AFFORDABLE_GROUPS = ("none", "np", "cs", "rf", "np_cs", "np_rf", "px", "np_px")


class _FrontierDefaults:
    """The defaults of `patchveil tune` (`FrontierOptions` repeats them for Python callers)."""

    trials = 10
    train_images = 2400
    validation_images = 480
    tenants = 2
    epochs = (4,)
    block_sizes = (4, 8)
    groups = AFFORDABLE_GROUPS
    learning_rate = (5e-4, 2e-3)
    size = "cpu"


def add_frontier_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `patchveil tune` and bench/frontier.py (numbers bounded)."""
    defaults = _FrontierDefaults
    parser.add_argument("--trials", type=bounded_int(1, 10_000), default=defaults.trials)
    parser.add_argument("--train-images", type=positive_int, default=defaults.train_images)
    parser.add_argument(
        "--validation-images", type=positive_int, default=defaults.validation_images
    )
    parser.add_argument("--tenants", type=bounded_int(1, 1000), default=defaults.tenants)
    parser.add_argument(
        "--epochs", type=bounded_int(1, 10_000), nargs="+", default=list(defaults.epochs)
    )
    parser.add_argument(
        "--block-sizes", type=image_side, nargs="+", default=list(defaults.block_sizes)
    )
    parser.add_argument("--groups", nargs="+", default=list(defaults.groups))
    parser.add_argument("--depths", type=bounded_int(1, 64), nargs="+", default=[6])
    parser.add_argument("--widths", type=bounded_int(64, 4096), nargs="+", default=[192])
    parser.add_argument(
        "--learning-rate",
        type=bounded_float(1e-6, 0.5),
        nargs=2,
        default=list(defaults.learning_rate),
        metavar=("LOW", "HIGH"),
    )
    parser.add_argument("--block-cutmix", type=bounded_float(0, 1), nargs="+", default=[0.0, 0.5])
    parser.add_argument("--size", default=defaults.size, help="base model size (cpu, test, ...)")
    parser.add_argument(
        "--orbit-pools",
        nargs="+",
        default=["mean"],
        help="how invariant embeddings pool a patch's orbit: mean, max, mean_max, sorted",
    )
    parser.add_argument(
        "--start-with",
        action="append",
        metavar="SPEC",
        help="a configuration measured first, e.g. block=4,window=4,group=rf,model="
        "window_position,pool=max,lr=1e-3,cutmix=0.5 (repeatable; keys not given are drawn)",
    )
    parser.add_argument(
        "--grace-period",
        type=bounded_int(1, 10_000),
        default=1,
        help="epochs before ASHA may stop a trial (the largest epochs: ASHA never stops one)",
    )
    parser.add_argument("--attack-images", type=bounded_int(1, 10_000), default=24)
    parser.add_argument("--gallery-images", type=bounded_int(1, 100_000), default=1000)
    parser.add_argument("--batch-size", type=bounded_int(1, 65_536), default=128)
    parser.add_argument(
        "--workers", type=bounded_int(0, 1024), default=0, help="Ray Train workers per trial"
    )
    parser.add_argument("--cpus", type=bounded_int(1, 1024), default=2, help="CPUs per trial")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--data", help="CIFAR-10 folder (default: the shared subset)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--name", default="frontier", help="file stem of the outputs")
    parser.add_argument("--storage", help="Ray Tune/Train storage folder (default: a temp folder)")
