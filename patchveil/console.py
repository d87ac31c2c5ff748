"""What a person at the console sees: the stages, progress and results of a command; Prefect's
logs go to a file instead (named at the end) and Ray keeps only warnings, unless --verbose."""

from __future__ import annotations

import os
from pathlib import Path

# The level of Ray's and its workers' Python loggers when the console is kept quiet (Ray's own
# complete logs stay in its session folder, /tmp/ray/session_latest/logs).
QUIET_RAY_LOG_LEVEL = "WARNING"
PREFECT_LOGGING_FILE = "prefect-logging.yml"
RAY_DATA_LOGGING_FILE = "ray-data-logging.yml"


def quiet_services(log_file: Path) -> Path:
    """Before Prefect or Ray is first used: Prefect's console handler writes to `log_file`, Ray
    Data draws no progress bars and prints only its errors (its configuration files beside
    `log_file`). An operator's own setting of any of them wins. Returns the file."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    configurations = {
        "RAY_DATA_LOGGING_CONFIG": (RAY_DATA_LOGGING_FILE, ray_data_logging_quiet),
        "PREFECT_LOGGING_SETTINGS_PATH": (
            PREFECT_LOGGING_FILE,
            lambda: prefect_logging_to_file(log_file),
        ),
    }
    for variable, (name, text) in configurations.items():
        if variable not in os.environ:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            (log_file.parent / name).write_text(text())
            os.environ[variable] = str(log_file.parent / name)
    # Now, not at the first flow: once Ray has put a handler on the root logger, Prefect only
    # adjusts levels and would never add its own handlers.
    from prefect.logging.configuration import setup_logging

    setup_logging()
    return log_file


def prefect_logging_to_file(log_file: Path) -> str:
    """Prefect's default logging configuration with its console handler writing to a file."""
    import importlib.util

    import yaml

    # Located without importing Prefect: its settings are read once, on import, and
    # PREFECT_LOGGING_SETTINGS_PATH is set only after this file is written.
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    default = Path(spec.origin).parent / "logging" / "logging.yml"
    config = yaml.safe_load(default.read_text())
    config["handlers"]["console"] = {
        "level": 0,
        "class": "logging.FileHandler",
        "formatter": "standard",
        "filename": str(log_file),
    }
    return yaml.safe_dump(config, sort_keys=False)


def ray_data_logging_quiet() -> str:
    """Ray Data's logging configuration (ray 2.60's default: everything to `ray-data.log` in the
    session folder) with its console handler at ERROR: no per-dataset INFO lines, no "progress
    bars disabled" warning, in the driver and in the workers (they inherit the variable).
    Written out rather than read from `ray.data`: importing Ray Data would cost every command
    seconds at start."""
    import yaml

    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "ray": {"format": "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"}
        },
        "filters": {"console_filter": {"()": "ray.data._internal.logging.HiddenRecordFilter"}},
        "handlers": {
            "file": {
                "class": "ray.data._internal.logging.SessionFileHandler",
                "formatter": "ray",
                "filename": "ray-data.log",
            },
            "console": {
                "class": "ray._private.log.PlainRayHandler",
                "formatter": "ray",
                "level": "ERROR",
                "filters": ["console_filter"],
            },
        },
        "loggers": {
            "ray.data": {"level": "DEBUG", "handlers": ["file", "console"], "propagate": False}
        },
    }
    return yaml.safe_dump(config, sort_keys=False)
