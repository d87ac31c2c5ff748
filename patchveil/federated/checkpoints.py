"""Per-round checkpoints of the global shared weights: write atomically, find the latest, resume."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.federated.messages import Weights
from patchveil.fsutil import write_bytes_atomic

_NAME = re.compile(r"^round-(\d{4,})\.npz$")


def checkpoint_path(folder: Path | str, round_index: int) -> Path:
    return Path(folder) / f"round-{round_index:04d}.npz"


def save_round(
    folder: Path | str, round_index: int, weights: Weights, summary: dict[str, Any]
) -> Path:
    """The global shared weights after `round_index`, with the round's summary (JSON)."""
    buffer = io.BytesIO()
    arrays = {f"w{i}": value for i, (_, value) in enumerate(weights)}
    meta = {"round": round_index, "names": [name for name, _ in weights], "summary": summary}
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    path = checkpoint_path(folder, round_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def latest_round(folder: Path | str) -> int:
    """The last completed round in the folder (0 when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    rounds = [int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return max(rounds, default=0)


def load_round(folder: Path | str, round_index: int) -> tuple[Weights, dict[str, Any]]:
    """The weights and summary written after `round_index`."""
    path = checkpoint_path(folder, round_index)
    try:
        with np.load(path) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            weights = tuple((name, archive[f"w{i}"].copy()) for i, name in enumerate(meta["names"]))
    except (OSError, KeyError, ValueError) as error:
        raise PatchveilError(
            f"federated checkpoint {path} cannot be read ({error}); delete it to resume from the "
            "round before"
        ) from None
    return weights, meta["summary"]


def summaries(folder: Path | str) -> list[dict[str, Any]]:
    """Every completed round's summary, in order."""
    return [
        load_round(folder, r)[1]
        for r in range(1, latest_round(folder) + 1)
        if checkpoint_path(folder, r).is_file()
    ]
