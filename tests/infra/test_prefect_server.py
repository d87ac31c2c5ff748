"""A Prefect server on PostgreSQL runs a deployment of `infra/prefect/prefect.yaml` via a worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.services import INFRA_TESTS_ENV, LOCALHOST, PostgresServer, free_port

REPOSITORY = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPOSITORY / "infra" / "prefect" / "prefect.yaml"
DEPLOYED_DIRECTORY = "/opt/patchveil"  # where the image holds the code (prefect.yaml's pull step)
SERVER_TIMEOUT_S = 180
RUN_TIMEOUT_S = 400

# A server, a worker and a flow-run process with its own Ray: minutes on a busy 2-core machine,
# so `.ci/run` runs it after `make test` (see tests/services.py).
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get(INFRA_TESTS_ENV) != "1",
        reason=f"starts a Prefect server and worker: set {INFRA_TESTS_ENV}=1 (as .ci/run does)",
    ),
]


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    environment: dict[str, str]


def _database(server: PostgresServer, name: str, *, drop: bool = False) -> None:
    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, dbname="postgres", autocommit=True
    ) as connection:
        verb = "DROP DATABASE IF EXISTS" if drop else "CREATE DATABASE"
        connection.execute(f'{verb} "{name}"' + (" WITH (FORCE)" if drop else ""))


@pytest.fixture(scope="module")
def prefect_server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """`prefect server start` on 127.0.0.1 with its state in the session's PostgreSQL."""
    database = f"prefect_{uuid.uuid4().hex[:8]}"
    _database(postgres_server, database)
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-server")
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://{LOCALHOST}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres_server.url(database).replace(
            "+psycopg", "+asyncpg"
        ),
    }
    log = open(home / "server.log", "wb")  # noqa: SIM115 (closed at teardown)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            LOCALHOST,
            "--port",
            str(port),
        ],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_healthy(f"http://{LOCALHOST}:{port}/api/health", server, home / "server.log")
        yield PrefectServer(api_url=environment["PREFECT_API_URL"], environment=environment)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        _database(postgres_server, database, drop=True)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"prefect server exited with {server.returncode}: {log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"prefect server not healthy at {url} after {SERVER_TIMEOUT_S} s")


def _prefect(server: PrefectServer, *arguments: str, module: str = "prefect") -> str:
    run = subprocess.run(
        [sys.executable, "-m", module, "--no-prompt", *arguments],
        cwd=REPOSITORY,
        env=server.environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, (
        f"prefect {' '.join(arguments)}: {run.stdout[-3000:]}{run.stderr[-3000:]}"
    )
    return run.stdout


def test_a_worker_runs_the_scheduled_inbox_deployment_against_a_postgresql_server(
    prefect_server: PrefectServer, postgres_url: str, tmp_path: Path
) -> None:
    # The deployments exactly as infra/prefect/prefect.yaml declares them, the code pulled from
    # this checkout instead of the image's /opt/patchveil.
    text = PREFECT_FILE.read_text()
    assert DEPLOYED_DIRECTORY in text
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(text.replace(DEPLOYED_DIRECTORY, str(REPOSITORY)))
    _prefect(prefect_server, "work-pool", "create", "patchveil", "--type", "process")
    deploy = ("deploy", "--all", "--prefect-file", str(prefect_file))
    _prefect(prefect_server, *deploy, module="tests.infra.prefect_deploy")  # Prefect 3.8.8 fix

    api = prefect_server.api_url
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    by_name = {deployment["name"]: deployment for deployment in deployments}
    assert {"inbox-ingestion", "onboard-tenants", "rotate-tenant-key", "train-shared-model"} <= set(
        by_name
    )
    crons = [entry["schedule"]["cron"] for entry in by_name["inbox-ingestion"]["schedules"]]
    assert crons == ["*/10 * * * *"]
    assert httpx.get(api.removesuffix("/api") + "/", timeout=30).status_code == 200  # the UI

    # The worker's flow runs use the platform's cluster configuration: a PostgreSQL registry.
    worker_environment = {
        **prefect_server.environment,
        "PATCHVEIL_HOME": str(tmp_path / "platform-home"),
        "PATCHVEIL_REGISTRY_URL": postgres_url,
    }
    worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (closed below)
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "patchveil", "--limit", "1"],
        cwd=REPOSITORY,
        env=worker_environment,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # A run of the scheduled deployment, due now, that only the worker can execute.
        _prefect(
            prefect_server,
            "deployment",
            "run",
            "ingest-inboxes/inbox-ingestion",
            "--watch",
            "--watch-timeout",
            str(RUN_TIMEOUT_S),
        )
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_log.close()
    runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
    executed = [run for run in runs if run["deployment_id"] == by_name["inbox-ingestion"]["id"]]
    assert any(run["state_type"] == "COMPLETED" for run in executed), (
        [run["state_type"] for run in executed],
        (tmp_path / "worker.log").read_text()[-3000:],
    )
