"""Command-line options of the experiments, kept free of torch so `patchveil --help` is fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from patchveil.cli_types import bounded_int, image_side, positive_int, seed

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
