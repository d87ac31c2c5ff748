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
# Ray-internal actors without resources that Ray may place on any node, tenant nodes included.
RAY_HELPERS_ANYWHERE = {"PreemptionWatcher"}

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
    log = tmp_path / "driver.log"
    with open(log, "w") as errors:
        try:
            run = subprocess.run(
                [sys.executable, "-m", "tests.infra.cluster_scenario", str(tmp_path)],
                cwd=REPOSITORY,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                timeout=DRIVER_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver ran past {DRIVER_TIMEOUT_S} s: {log.read_text()[-4000:]}")
    assert run.returncode == 0, log.read_text()[-4000:]
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

    # Training ran too: its workers and controller on the platform node. Ray schedules its own
    # zero-CPU helpers anywhere (seen: Ray Train's PreemptionWatcher on a tenant node); they
    # hold no key-store path, but a tenant node in the platform's cluster runs what the cluster
    # schedules there: any other actor on a tenant node fails this test by name.
    card = json.loads(Path(result["trained"]["card"]).read_text())
    assert card["dataset"]["name"] == work["dataset"]
    for key_store in result["key_stores"].values():
        assert str(Path(key_store).parent) not in json.dumps(card)
    tenant_nodes = {node_ids["tenant:alpha"], node_ids["tenant:bolt"]}
    placed = [actor for actor in result["actors"] if actor["node_id"].strip("0")]
    assert any("TrainWorker" in actor["class"] for actor in placed), placed
    for actor in placed:
        if actor["class"] == "TenantActor":
            assert actor["node_id"] in tenant_nodes, actor
        elif "Train" in actor["class"] and actor["class"] not in RAY_HELPERS_ANYWHERE:
            assert actor["node_id"] == node_ids["platform"], actor
        elif actor["node_id"] in tenant_nodes:
            assert actor["class"] in RAY_HELPERS_ANYWHERE, (actor, placed)
