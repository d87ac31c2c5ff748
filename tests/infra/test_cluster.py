"""A multi-node Ray cluster on one machine: tenant actors only on their own nodes, platform work
on the platform node without a key-store path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import INFRA_TESTS_ENV, RayCluster, running_ray_cluster

REPOSITORY = Path(__file__).resolve().parents[2]
DRIVER_TIMEOUT_S = 400
# Ray Train's record of a run's checkpoints, in the run's folder.
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"
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


def latest_recorded_checkpoint(snapshot: Path) -> str | None:
    """The folder name of the latest checkpoint Ray Train's controller has recorded, if any."""
    try:
        latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return None
    return None if latest is None else str(latest["checkpoint_dir_name"])


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


def test_training_resumes_from_its_last_checkpoint_when_its_node_is_killed(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """A platform node that runs the only Ray Train worker is SIGKILLed after Ray Train recorded
    the epoch-1 checkpoint; a replacement node joins and the run goes on from that checkpoint."""
    from tests.infra import node_loss_scenario as scenario

    trainer_resources = {"platform": 1.0, scenario.TRAINER_RESOURCE: 1.0}
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PATCHVEIL_")},
        **cluster.auth_environment,
        "RAY_ADDRESS": cluster.address,
        "PATCHVEIL_HOME": str(tmp_path / "platform-home"),
    }
    snapshot = scenario.storage_path(tmp_path) / scenario.RUN_NAME / CHECKPOINT_SNAPSHOT
    log = tmp_path / "driver.log"
    with open(log, "w") as errors:
        driver = subprocess.Popen(
            [sys.executable, "-m", "tests.infra.node_loss_scenario", str(tmp_path)],
            cwd=REPOSITORY,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        # Joins while the driver publishes and reads the dataset (Ray Train waits for it).
        first = cluster.add_node("trainer-1", trainer_resources)
        # Ray Train's controller writes this snapshot once it has recorded a checkpoint: from
        # then on a restarted run starts from it.
        started = time.monotonic()
        while (latest_at_kill := latest_recorded_checkpoint(snapshot)) is None:
            if driver.poll() is not None or time.monotonic() - started > DRIVER_TIMEOUT_S:
                pytest.fail(f"no checkpoint recorded: {log.read_text()[-4000:]}")
            time.sleep(0.2)
        cluster.kill_node(first)
        killed = time.monotonic()
        cluster.add_node("trainer-2", trainer_resources)
        try:
            stdout, _ = driver.communicate(timeout=DRIVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver ran past {DRIVER_TIMEOUT_S} s: {log.read_text()[-4000:]}")
        after_kill_s = time.monotonic() - killed
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, log.read_text()[-4000:]
    result = json.loads(stdout.strip().splitlines()[-1])

    assert latest_at_kill == "checkpoint_epoch=0001"
    epochs = result["epochs"]
    # The epoch counter went on from the checkpoint: epoch 1 once, by the first attempt, and
    # epochs 2 and 3 by the second, which started from the epoch-1 checkpoint (a restart from
    # scratch would say 0, and would have held after epoch 1 again).
    assert [entry["epoch"] for entry in epochs] == [1, 2, 3]
    assert [entry["resumed_from_epoch"] for entry in epochs] == [0, 1, 1]
    assert Path(result["checkpoint_path"]).name == "checkpoint_epoch=0003"
    (replacement,) = result["trainer_nodes_at_end"]
    # One worker per attempt: the first on the killed node, the second on its replacement.
    assert len(result["workers"]) == 2, result["workers"]
    (killed_node,) = {worker["node_id"] for worker in result["workers"]} - {replacement}
    assert killed_node in result["dead_nodes"]
    # Recorded for infra/README.md: the node loss, the replacement and the resumed epochs.
    print(f"node killed → run finished in {after_kill_s:.0f} s ({result['seconds']:.0f} s in all)")
