"""Keep Prefect's own state under the platform home; call before Prefect is imported."""

from __future__ import annotations

import os
from pathlib import Path

from patchveil.config import PlatformConfig


def use_platform_home_for_prefect(config: PlatformConfig) -> None:
    """Prefect's SQLite database and results go to `<home>/prefect` unless the operator
    configured Prefect otherwise; no telemetry is sent; the ephemeral server may start slowly."""
    os.environ.setdefault("PREFECT_HOME", str(Path(config.home) / "prefect"))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral server gets 20 s to start by default; a busy 2-core machine needs longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
