"""Provenance for every measured figure: the command, the git commit, the machine and the time."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patchveil.fsutil import write_bytes_atomic


def git_commit(cwd: Path | str | None = None) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    description = (
        f"{platform.node()}: {os.cpu_count()} CPU ({cpu}), {platform.system()} {platform.machine()}"
    )
    try:
        import torch

        if torch.cuda.is_available():
            description += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return description


def provenance(command: list[str] | None = None) -> dict[str, Any]:
    argv = command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {
        "command": shlex.join(argv),
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def provenance_markdown(meta: dict[str, Any]) -> str:
    return (
        f"- command: `{meta['command']}`\n- commit: `{meta['commit']}`\n"
        f"- machine: {meta['machine']}\n- date: {meta['date']}\n"
    )


def write_json(path: Path | str, payload: dict[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def write_text(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode())
