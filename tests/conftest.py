"""Session-wide fixtures: one local Ray and one Prefect test harness, each started on first use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A small local Ray (4 logical CPUs, no dashboard), started on first use, shut down at the end.

    Logical CPUs are scheduling slots, not cores: tenant actors hold 0.25 each, and Ray Data
    reads still find a free slot beside them.
    """
    ray = pytest.importorskip("ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    if started_here:
        ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Prefect's test harness (ephemeral API server, temporary SQLite), once per session.

    PREFECT_HOME and local result storage live in a temporary folder. Yields the folders Prefect
    writes to, `home` and `database`, so tests can search them.
    """
    pytest.importorskip("prefect")
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    updates = {
        PREFECT_HOME: home,
        PREFECT_LOCAL_STORAGE_PATH: home / "storage",
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=90):
        database_url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield {"home": home, "database": Path(database_url.partition(":///")[2]).parent}


# Real services for the `postgres` and `s3` tests, each started on first use only and shared by
# the whole session (one PostgreSQL server, one S3 endpoint): see tests/services.py.
from tests.services import (  # noqa: E402, F401
    postgres_server,
    postgres_url,
    postgresql_database,
    postgresql_noproc_server,
    s3_endpoint,
)
