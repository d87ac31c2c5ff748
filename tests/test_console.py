"""The console stays readable: Prefect's logs go to a file, Ray Data draws no bars and prints
only its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from patchveil.console import prefect_logging_to_file

_PROBE = """
import json, logging, os, sys
from pathlib import Path
from patchveil.console import quiet_services
quiet_services(Path(sys.argv[1]))
logging.getLogger("prefect.example").info("to the file")
import ray.data
print("REPORT " + json.dumps({
    "bars_off": os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS"),
    "root": [type(h).__name__ for h in logging.getLogger().handlers],
    "ray_data": sorted(
        (type(h).__name__, logging.getLevelName(h.level))
        for h in logging.getLogger("ray.data").handlers
    ),
}))
"""


def test_prefect_console_handler_becomes_a_file(tmp_path: Path) -> None:
    config = yaml.safe_load(prefect_logging_to_file(tmp_path / "x.log"))
    assert config["handlers"]["console"]["class"] == "logging.FileHandler"
    assert config["handlers"]["console"]["filename"] == str(tmp_path / "x.log")
    assert "api" in config["handlers"]  # the rest of Prefect's configuration is kept


def test_quiet_services_in_a_fresh_process(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "patchveil.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    environment["PREFECT_HOME"] = str(tmp_path / "prefect")
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(log_file)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.rsplit("REPORT ", 1)[1])
    assert report == {
        "bars_off": "1",
        "root": ["FileHandler"],
        # Ray Data's console handler shows errors only; its file handler keeps everything.
        "ray_data": [["PlainRayHandler", "ERROR"], ["SessionFileHandler", "NOTSET"]],
    }
    assert "to the file" in log_file.read_text()
    assert "to the file" not in probe.stdout + probe.stderr
