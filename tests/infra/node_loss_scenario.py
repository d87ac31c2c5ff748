"""A Ray Train run whose worker's node is killed after the first checkpoint, on a real cluster.

Run by `test_cluster.py` as a driver process (`python -m tests.infra.node_loss_scenario WORKDIR`)
with `RAY_ADDRESS` naming the test cluster, which has one training node (custom resources
`platform` and `trainer`). The test watches the run's folder, kills that node once Ray Train has
recorded the epoch-1 checkpoint, and starts a replacement; this driver only trains. The first
attempt holds after epoch 1 (`hold_after_epoch`), so the kill lands while the run is going.
Prints one JSON line with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import ray
import ray.data

from patchveil.config import RAY_NAMESPACE
from patchveil.models.ray_train import fit_shared_model
from patchveil.models.training import TrainConfig
from patchveil.models.vit import ModelSpec
from tests.infra.cluster_scenario import LOOPBACK
from tests.models.encrypted_dataset import BLOCK_SIZE, IMAGE_SIZE, publish_tiny_dataset

RUN_NAME = "node-loss"
EPOCHS = 3
# The only nodes that offer it are the training node and its replacement.
TRAINER_RESOURCE = "trainer"
# Long enough for the test to see the checkpoint and kill the node; a run that was never
# interrupted finishes after it in one attempt, which the test reports.
HOLD_S = 120.0


def storage_path(workdir: Path) -> Path:
    return workdir / "checkpoints"


def trainer_nodes() -> list[str]:
    """Ids of the alive nodes that offer the `trainer` resource."""
    return [
        node["NodeID"]
        for node in ray.nodes()
        if node["Alive"] and TRAINER_RESOURCE in node["Resources"]
    ]


def training_workers() -> list[dict[str, Any]]:
    """The Ray Train workers this driver's run started (live or dead): class and node."""
    job_id = ray.get_runtime_context().get_job_id()
    return [
        {"class": entry["ActorClassName"], "node_id": entry["Address"]["NodeID"]}
        for entry in ray._private.state.actors().values()
        if entry["JobID"] == job_id and "TrainWorker" in entry["ActorClassName"]
    ]


def main(workdir: Path) -> None:
    ray.init(
        address=os.environ["RAY_ADDRESS"],
        namespace=RAY_NAMESPACE,
        log_to_driver=False,
        _node_ip_address=LOOPBACK,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The test plays two tenants here (keys and plain images stay in this function's locals);
    # the training code gets only the published version.
    tiny = publish_tiny_dataset(workdir / "datasets", train_per_tenant=96, validation_per_tenant=16)
    # The test starts the training node while this driver prepares; Ray Train waits for it.
    result = fit_shared_model(
        tiny.version.uri,
        ModelSpec(
            variant="standard",
            size="test",
            image_size=IMAGE_SIZE,
            patch_size=BLOCK_SIZE,
            num_classes=10,
        ),
        TrainConfig(epochs=EPOCHS, batch_size=32, learning_rate=3e-3, warmup_epochs=0.0),
        storage_path=str(storage_path(workdir)),
        run_name=RUN_NAME,
        num_workers=1,
        max_failures=1,
        hold_after_epoch=(1, HOLD_S),
        worker_resources={"platform": 0.01, TRAINER_RESOURCE: 0.01},
    )
    workers = training_workers()
    print(
        json.dumps(
            {
                "epochs": [dict(entry) for entry in result.epochs],
                "checkpoint_path": result.checkpoint_path,
                "trainer_nodes_at_end": trainer_nodes(),
                "dead_nodes": [node["NodeID"] for node in ray.nodes() if not node["Alive"]],
                "workers": workers,
                "seconds": result.seconds,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
