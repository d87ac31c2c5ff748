"""Real services for the `postgres` and `s3` tests, each on 127.0.0.1, started once per session.

PostgreSQL is Debian's server (`postgresql` package: `.ci/run` installs it), initialised in a
temporary folder and run as the `postgres` user when the tests run as root (initdb refuses root);
pytest-postgresql then creates a fresh database per test from it in connect-only mode. The S3
endpoint is moto's threaded server. Both stop at the end of the session, also after a failure.
Conftest files import the fixtures from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_postgresql import factories

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_USER = "postgres"
LOCALHOST = "127.0.0.1"
# The tests that start their own Ray (a scenario process, a multi-node cluster) run only with
# this set to 1: `.ci/run` runs them after the suite, which they would push past its time budget.
INFRA_TESTS_ENV = "PATCHVEIL_INFRA_TESTS"
# What `ray start --block` prints once its node has joined the cluster.
NODE_STARTED = "Ray runtime started"
# moto accepts any credentials; these only keep the AWS SDK from looking for real ones.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "patchveil-test",
    "AWS_SECRET_ACCESS_KEY": "patchveil-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (newest version), or a failure saying how to
    install them: the `postgres` tests run in CI, they never skip."""
    found = sorted(Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/")))
    if not found or not (found[-1] / "initdb").is_file():
        pytest.fail(
            f"no PostgreSQL server programs under {POSTGRES_BIN_GLOB}; install Debian's "
            "`postgresql` package (`apt-get install -y postgresql`, as `.ci/run` does)"
        )
    return found[-1]


@dataclass(frozen=True)
class PostgresServer:
    """A running server, shaped as pytest-postgresql's `depends_on` base fixture expects."""

    host: str
    port: int
    user: str = POSTGRES_USER
    password: str = ""
    options: str = ""
    dbname: str = "patchveil"
    maintenance_dbname: str = "postgres"

    @property
    def template_dbname(self) -> str | None:
        # None: pytest-postgresql builds its template database from PostgreSQL's own template1.
        return None

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of one database on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; any other user runs them as itself.
    return ["runuser", "-u", POSTGRES_USER, "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl start on a free port of 127.0.0.1 (no other listener); stop and remove
    the data folder on exit. Trust authentication: only this machine's loopback can connect."""
    binaries = postgres_bin()
    # Not under pytest's tmp folders: those are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="patchveil-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        account = pwd.getpwnam(POSTGRES_USER)
        for path in (folder, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    quiet: dict[str, Any] = {"check": True, "capture_output": True, "text": True}
    try:
        subprocess.run(
            _as_postgres(
                [
                    *(str(binaries / "initdb"), "-D", str(data), "-U", POSTGRES_USER),
                    *("--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"),
                ]
            ),
            **quiet,
        )
        options = (
            f"-p {port} -k {sockets} -c listen_addresses={LOCALHOST} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(
                [
                    *(str(binaries / "pg_ctl"), "-D", str(data), "-o", options),
                    *("-l", str(folder / "server.log"), "-w", "-t", "60", "start"),
                ]
            ),
            **quiet,
        )
    except subprocess.CalledProcessError as error:
        log = folder / "server.log"
        detail = log.read_text()[-2000:] if log.exists() else error.stderr
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start ({' '.join(error.cmd[:6])} …): {detail}")
    try:
        yield PostgresServer(host=LOCALHOST, port=port)
    finally:
        subprocess.run(
            _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started on first use."""
    with running_postgres() as server:
        yield server


# pytest-postgresql in connect-only mode against the server above: a template database once,
# then `postgresql_database` hands each test a fresh database cloned from it and drops it after.
postgresql_noproc_server = factories.postgresql_noproc(depends_on="postgres_server")
postgresql_database = factories.postgresql("postgresql_noproc_server")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgresql_database: Any) -> str:
    """The SQLAlchemy URL of this test's own empty PostgreSQL database."""
    return postgres_server.url(postgresql_database.info.dbname)


@dataclass(frozen=True)
class S3Endpoint:
    """A moto S3 server: its URL and the environment an S3 client of pyarrow needs for it."""

    url: str

    @property
    def environment(self) -> dict[str, str]:
        # AWS_ENDPOINT_URL_S3 is read by the AWS SDK inside pyarrow, so `s3://bucket/…` URIs stay
        # plain and every process (Ray workers too) that inherits it talks to this endpoint.
        return {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.url}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 (a free port), for the whole session."""
    from moto.server import ThreadedMotoServer

    # moto's HTTP server logs every request at INFO: thousands of lines per test otherwise.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(url=f"http://{host}:{port}")
    finally:
        server.stop()


class RayCluster:
    """A Ray cluster of separate nodes on this machine: a platform head and one node per tenant;
    a test may add nodes (`add_node`) and kill them (`kill_node`) as a machine failure would."""

    def __init__(
        self, address: str, tenants: tuple[str, ...], temp_dir: Path, environment: dict[str, str]
    ) -> None:
        self.address = address  # the GCS address drivers join with RAY_ADDRESS
        self.tenants = tenants
        self._temp_dir = temp_dir
        self._environment = environment
        self._nodes: list[subprocess.Popen[bytes]] = []

    @property
    def auth_environment(self) -> dict[str, str]:
        """Token authentication with this cluster's own token: a driver needs these variables."""
        return {name: self._environment[name] for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}

    def add_node(
        self, name: str, resources: dict[str, float], num_cpus: int = 1, timeout_s: float = 300
    ) -> subprocess.Popen[bytes]:
        """Start one more node (`ray start --address=…`) and wait until it has joined."""
        worker = [
            # Ray turns a loopback --address into the machine's address; its GCS listens on
            # every interface, whatever --node-ip-address says (Ray offers no loopback-only GCS).
            str(Path(sys.executable).parent / "ray"), "start", f"--address={self.address}",
            f"--num-cpus={num_cpus}", "--resources", json.dumps(resources),
            *_ray_node_options(self._temp_dir),
        ]  # fmt: skip
        # A second try: a raylet has 30 s (fixed in Ray) to register, which a busy 2-core
        # machine does not always give it.
        for attempt in (1, 2):
            log = self._temp_dir / f"{name}-{attempt}.log"
            node = _start_node([*worker, *_ray_node_ports()], self._environment, log)
            self._nodes.append(node)
            if _wait_for_log(node, log, NODE_STARTED, timeout_s, fail=attempt == 2):
                return node
            _end_group(node)  # a raylet of the failed try must not join later
        raise AssertionError("unreachable: the second try fails the test")

    def kill_node(self, node: subprocess.Popen[bytes]) -> None:
        """SIGKILL a node's whole process group (raylet, workers, agents): a machine lost."""
        _end_group(node)

    def stop(self) -> None:
        """End every node started here, tenant and added nodes first, the head last."""
        for node in reversed(self._nodes):
            node.terminate()
        for node in reversed(self._nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=60)
            _end_group(node)


def _ray_node_options(temp_dir: Path) -> list[str]:
    return ["--block", f"--node-ip-address={LOCALHOST}", f"--temp-dir={temp_dir}"]


def _ray_node_ports() -> list[str]:
    # Every port a node binds that has a fixed default, so several nodes fit on one machine.
    options = (
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    )
    return [f"{option}={free_port()}" for option in options]


@contextlib.contextmanager
def running_ray_cluster(tenants: tuple[str, ...], timeout_s: float = 300) -> Iterator[RayCluster]:
    """`ray start --head` (platform node, custom resource `platform`) plus one `ray start` per
    tenant with the custom resource `tenant:<id>`, all on 127.0.0.1 in a private temp folder.

    Each node runs under `ray start --block`, which takes its node's processes down when it is
    terminated: the teardown ends exactly the nodes started here (never `ray stop`, which would
    end every Ray on the machine).
    """
    ray_bin = Path(sys.executable).parent / "ray"
    # Short: Ray's socket paths live under it and Unix sockets allow ~100 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="pv-ray-"))
    port = free_port()
    # Its own token, in its own folder: Ray would otherwise pick up (or miss) ~/.ray/auth_token.
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth}
    environment.pop("RAY_ADDRESS", None)
    cluster = RayCluster(f"{LOCALHOST}:{port}", tenants, temp_dir, environment)
    head = [
        str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2",
        "--resources", json.dumps({"platform": 1}), "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}", *_ray_node_options(temp_dir),
        *_ray_node_ports(),
    ]  # fmt: skip
    try:
        cluster._nodes.append(_start_node(head, environment, temp_dir / "head.log"))
        _wait_for_port(port, cluster._nodes[0], temp_dir / "head.log", timeout_s)
        # One node at a time: two raylets registering at once on a busy machine time out.
        for tenant_id in tenants:
            cluster.add_node(tenant_id, {f"tenant:{tenant_id}": 1}, timeout_s=timeout_s)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _end_group(node: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of a node: its own process group (its raylet, workers, agents),
    started here in a session of its own, so nothing else on the machine is touched."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(node.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(timeout=10)


def _start_node(
    command: list[str], environment: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(
            command,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_log(
    node: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float, fail: bool = True
) -> bool:
    """Wait until a node's `ray start` reports it joined (no probe process needed); False (or a
    failure, with `fail`) when it exited or ran out of time first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and node.poll() is None:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    if text in log.read_text(errors="replace"):
        return True
    if fail:
        pytest.fail(f"a Ray node did not start ({log.name}): {log.read_text()[-2000:]}")
    return False


def _wait_for_port(port: int, node: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Wait until the head's GCS accepts connections (the tenant nodes join it then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.poll() is not None:
            pytest.fail(f"the Ray head exited with {node.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex((LOCALHOST, port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the Ray head did not listen on {LOCALHOST}:{port} in {timeout_s:g} s")
