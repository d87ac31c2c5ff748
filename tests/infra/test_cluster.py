"""A multi-node Ray cluster on one machine: tenant actors only on their own nodes, platform work
on the platform node without a key-store path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import INFRA_TESTS_ENV, RayCluster, running_ray_cluster

REPOSITORY = Path(__file__).resolve().parents[2]
DRIVER_TIMEOUT_S = 400

# Three Ray nodes and a driver process take minutes on a busy 2-core machine: `.ci/run` runs this
# after `make test` (see tests/services.py).
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get(INFRA_TESTS_ENV) != "1",
        reason=f"starts a 3-node Ray cluster: set {INFRA_TESTS_ENV}=1 (as .ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with running_ray_cluster(("alpha", "bolt")) as running:
        yield running


def test_tenant_actors_run_only_on_their_nodes_and_platform_work_gets_no_key_store(
    cluster: RayCluster, tmp_path: Path, prefect_harness: dict[str, Path]
) -> None:
    from prefect.settings import PREFECT_API_URL

    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PATCHVEIL_")},
        **cluster.auth_environment,
        "RAY_ADDRESS": cluster.address,
        "PATCHVEIL_HOME": str(tmp_path / "platform-home"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    run = subprocess.run(
        [sys.executable, "-m", "tests.infra.cluster_scenario", str(tmp_path)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["connected"] == "running"
    node_ids = result["node_ids"]
    assert set(node_ids) == {"platform", "tenant:alpha", "tenant:bolt"}
    assert len(set(node_ids.values())) == 3, "every tenant and the platform on its own node"
    for tenant_id, placed in result["placed"].items():
        assert placed["node_id"] == node_ids[f"tenant:{tenant_id}"], tenant_id
        assert placed["key_store"] == result["key_stores"][tenant_id]
    assert all(result["key_stores_made"].values())

    work = result["platform_work"]
    assert work["node_id"] == node_ids["platform"]
    assert work["tenants"] == ["alpha", "bolt"] and work["rows"] > 0
    received = json.dumps(work["received"])
    for key_store in result["key_stores"].values():
        assert key_store not in received
        assert str(Path(key_store).parent) not in received  # not even the tenant's folder
    assert "PATCHVEIL_KEYSTORE" not in received
