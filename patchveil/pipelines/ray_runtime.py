"""Connect to the Ray cluster (`RAY_ADDRESS`) or start a local Ray for the embedded default."""

from __future__ import annotations

import logging
import os

from patchveil.config import RAY_NAMESPACE as NAMESPACE
from patchveil.config import PlatformConfig

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def ensure_ray(
    config: PlatformConfig | None = None,
    num_cpus: int | None = None,
    log_to_driver: bool = False,
    log_level: str | None = None,
    include_dashboard: bool = False,
) -> str:
    """Make sure this process talks to Ray; return "connected", "started" or "running".

    With `RAY_ADDRESS` set (e.g. `ray://head:10001` or `auto`) the process joins that cluster;
    otherwise it starts a local Ray with `num_cpus` logical CPUs (default: the machine's, at
    least 4, so a training worker, Ray Data and the small tenant actors all fit) and no
    dashboard. A Ray already initialised in this process (a test session, a notebook) is kept.
    `config` is accepted so callers pass what they have; the address comes from the environment.
    `log_to_driver` shows the workers' output (training progress) on this process's console;
    `log_level` (e.g. "WARNING") is the level of Ray's and the workers' Python loggers.
    `include_dashboard` starts a local Ray's dashboard (it needs `ray[default]`'s packages).
    """
    import ray

    if ray.is_initialized():
        return "running"
    address = os.environ.get(RAY_ADDRESS_ENV, "")
    logging_config = ray.LoggingConfig(log_level=log_level) if log_level else None
    if address:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=log_to_driver,
            logging_config=logging_config,
        )
        return "connected"
    ray.init(
        num_cpus=num_cpus or max(4, os.cpu_count() or 1),
        include_dashboard=include_dashboard,
        namespace=NAMESPACE,
        log_to_driver=log_to_driver,
        logging_config=logging_config,
        runtime_env={"worker_process_setup_hook": f"{__name__}.quiet_local_worker_logs"},
    )
    return "started"


# Without the dashboard (a local instance) Ray's state API is not served, and Ray Train's
# placement-group cleaner warns about it every few seconds for the whole run.
_STATE_API_POLLERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_worker_logs() -> None:
    """Worker setup hook of a local Ray instance: silence warnings about the absent state API."""
    for name in _STATE_API_POLLERS:
        logging.getLogger(name).setLevel(logging.ERROR)
