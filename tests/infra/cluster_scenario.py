"""Tenant actors on their own nodes, platform work on the platform node, on a real cluster.

Run by `test_cluster.py` as a driver process (`python -m tests.infra.cluster_scenario WORKDIR`)
with `RAY_ADDRESS` naming a cluster of separate Ray nodes; the test process may hold its own
local Ray, and one process cannot join two. Prints one JSON line with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from patchveil.config import RAY_NAMESPACE, PlatformConfig
from patchveil.datasets import load_manifest, read_shard
from patchveil.pipelines.onboarding import onboard_tenant
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_handle import call, existing_tenant_actor
from patchveil.pipelines.training import train_shared_model
from patchveil.registry import Registry

TENANTS = ("alpha", "bolt")
IMAGES = 120
NODES_TIMEOUT_S = 120
LOOPBACK = "127.0.0.1"


def wait_for_nodes(count: int) -> list[dict[str, Any]]:
    """The alive nodes, once `count` of them have joined."""
    deadline = time.monotonic() + NODES_TIMEOUT_S
    while True:
        alive = [node for node in ray.nodes() if node["Alive"]]
        if len(alive) >= count or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def actor_placements() -> list[dict[str, str]]:
    """Every actor this cluster ran (live or dead): its class and node."""
    return [
        {"class": entry["ActorClassName"], "node_id": entry["Address"]["NodeID"]}
        for entry in ray._private.state.actors().values()
    ]


def node_of_actor(handle: Any) -> str:
    """The node id an actor runs on, from the cluster's actor table (no dashboard needed)."""
    entry = ray._private.state.actors(actor_id=handle._actor_id.hex())
    return str(entry["Address"]["NodeID"])


@ray.remote(num_cpus=0.5, resources={"platform": 0.01})
def read_dataset_on_platform(version_uri: str) -> dict[str, Any]:
    """Platform work (what training does first): read a version's ciphertext rows, and report
    where it ran and everything it was given to run with."""
    version = load_manifest(version_uri)
    rows = sum(read_shard(uri).num_rows for uri in version.shard_uris)
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "rows": rows,
        "tenants": version.tenant_ids,
        "dataset": version.name,
        "received": {"version_uri": version_uri, "environ": dict(os.environ), "cwd": os.getcwd()},
    }


def write_source(folder: Path, seed: int) -> str:
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "images.npz"
    np.savez(
        path,
        images=generator.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8),
        labels=np.arange(IMAGES, dtype=np.int64) % 10,
        class_names=np.asarray([f"class{label}" for label in range(10)], dtype=np.str_),
    )
    return str(path)


def main(workdir: Path) -> None:
    config = PlatformConfig.from_env()
    # The nodes registered as 127.0.0.1; Ray would take this driver for the machine's outward
    # address and look for a node there, so it says which node it runs beside.
    ray.init(
        address=os.environ["RAY_ADDRESS"],
        namespace=RAY_NAMESPACE,
        log_to_driver=False,
        _node_ip_address=LOOPBACK,
    )
    connected = ensure_ray(config)  # keeps the connection: "running"
    nodes = wait_for_nodes(1 + len(TENANTS))
    if len(nodes) < 1 + len(TENANTS):
        # Without its node a pinned tenant actor would wait forever: fail now, saying why.
        raise RuntimeError(f"only {len(nodes)} of {1 + len(TENANTS)} Ray nodes joined")
    node_ids = {
        resource: node["NodeID"]
        for node in nodes
        for resource in node["Resources"]
        if resource == "platform" or resource.startswith("tenant:")
    }
    # Each tenant's key store lives on its side (here: a folder the platform home does not hold).
    key_stores = {tenant_id: workdir / "tenant-side" / tenant_id / "keys" for tenant_id in TENANTS}
    placed, onboarded = {}, {}
    for index, tenant_id in enumerate(TENANTS):
        source = write_source(workdir / "tenant-side" / tenant_id, seed=index)
        # The onboarding flow starts the tenant's actor itself: on a cluster with tenant nodes
        # it pins it to `tenant:<id>`, and encryption happens there.
        onboarded[tenant_id] = onboard_tenant(
            tenant_id,
            source,
            cipher="disposable",
            block_size=4,
            key_store=str(key_stores[tenant_id]),
            shard_size=60,
        )
        handle = existing_tenant_actor(tenant_id)
        described = call(handle.describe.remote())
        placed[tenant_id] = {"node_id": node_of_actor(handle), "key_store": described.key_store}
    with Registry.from_config(config) as registry:
        dataset = registry.list_dataset_versions(onboarded[TENANTS[-1]]["dataset"])[-1]
    platform_work = ray.get(read_dataset_on_platform.remote(dataset.uri))
    # Training on the cluster: its workers ask for the `platform` resource, which only the
    # platform node has.
    trained = train_shared_model(
        dataset.name,
        size="test",
        epochs=1,
        batch_size=64,
        warmup_epochs=0.0,
        num_workers=1,
        max_failures=0,
    )
    print(
        json.dumps(
            {
                "connected": connected,
                "node_ids": node_ids,
                "placed": placed,
                "platform_work": platform_work,
                "trained": {"model": trained["model_name"], "card": trained["model_card_uri"]},
                "actors": actor_placements(),
                "key_stores": {name: str(path) for name, path in key_stores.items()},
                "key_stores_made": {
                    name: any(path.iterdir()) if path.exists() else False
                    for name, path in key_stores.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
