"""Argument types of the `patchveil` command: bounded numbers that fail as one usage line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from patchveil.config import MAX_IMAGE_SIZE


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high], else argparse's one-line usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """A finite number in [low, high], else a one-line usage error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


image_side = bounded_int(1, MAX_IMAGE_SIZE)
positive_int = bounded_int(1, 2**31 - 1)
seed = bounded_int(0, 2**32 - 1)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
