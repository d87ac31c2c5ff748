"""The federated flow: FedAvg rounds over the tenants' federated clients on Ray, a checkpoint each.

`federated_training(rounds, clients_per_round, tenants, ...)` reads like the runbook: start (or
find) each tenant's federated client, then run the rounds, each one a task that sends the global
weights, averages the returned shared weights and writes a checkpoint; a rerun resumes after the
last checkpoint. A client whose actor dies mid-round is restarted by Ray (it reloads its key from
its store and its lock from its own folder) and asked again once. The flow sees no tensor, no key
and no lock parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from patchveil.config import PlatformConfig, check_tenant_id
from patchveil.errors import PatchveilError
from patchveil.federated.checkpoints import latest_round, load_round, save_round
from patchveil.federated.messages import ClientUpdate, LocalTraining, RoundPlan
from patchveil.federated.rounds import Dispatch, FederatedConfig, initial_weights, run_round
from patchveil.models.key_lock import KeyLockConfig
from patchveil.models.small_nets import NetSpec
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_handle import NAMESPACE, call

CLIENT_CPUS = 0.5
# Restarted by Ray when its process dies; a call that dies with it fails, and is sent again to
# the restarted actor for up to RESTART_PATIENCE_S (`call_surviving_restarts`).
CLIENT_RESTART_OPTIONS: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0}
# A restarting actor reloads torch, its key and its lock: seconds, more on a busy machine.
RESTART_PATIENCE_S = 120.0
_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


def client_name(tenant_id: str) -> str:
    """The Ray actor name of a tenant's federated client, `federated-<tenant_id>`."""
    return f"federated-{check_tenant_id(tenant_id)}"


@cache
def _federated_client_class() -> Any:
    """THE crossing into the tenant's side for federated rounds (as `tenant_handle` does for the
    tenant actor): the client class, made a Ray actor class, imported lazily by name."""
    import ray

    from patchveil.actors.federated_client import FederatedClient

    return ray.remote(**CLIENT_RESTART_OPTIONS)(FederatedClient)


def federated_client(
    tenant_id: str,
    source: str,
    key_store: str,
    lock_state_dir: str,
    evaluation_source: str | None = None,
    encrypt: bool = False,
    max_images: int | None = None,
) -> Any:
    """The tenant's running federated client, or a new detached one (found by name)."""
    options = {
        "name": client_name(tenant_id),
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "num_cpus": CLIENT_CPUS,
        "lifetime": "detached",
    }
    return (
        _federated_client_class()
        .options(**options)
        .remote(
            tenant_id, key_store, source, evaluation_source, lock_state_dir, encrypt, max_images
        )
    )


def _lost_actor_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return (RayActorError, ActorDiedError, ActorUnavailableError)


def call_surviving_restarts(send: Callable[[], Any], patience_s: float = RESTART_PATIENCE_S) -> Any:
    """`call(send())`, sent again while the actor is dead or restarting, for up to `patience_s`
    seconds: Ray restarts it, and the new one reloads its key and lock by itself."""
    lost = _lost_actor_errors()
    deadline = time.monotonic() + patience_s
    wait = 0.5
    while True:
        try:
            return call(send())
        except lost:
            if time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(2 * wait, 8.0)


def ray_dispatch(handles: Mapping[str, Any], patience_s: float = RESTART_PATIENCE_S) -> Dispatch:
    """Send every plan to its tenant's client at once; wait for each; a call lost with a dead
    actor is sent again to the restarted actor (`call_surviving_restarts`), then reported."""
    lost = _lost_actor_errors()

    def dispatch(plans: Mapping[str, RoundPlan]) -> dict[str, ClientUpdate | BaseException]:
        pending = {tenant: handles[tenant].fit.remote(plan) for tenant, plan in plans.items()}
        answers: dict[str, ClientUpdate | BaseException] = {}
        for tenant, reference in pending.items():
            try:
                answers[tenant] = call(reference)
            except lost:
                try:
                    answers[tenant] = call_surviving_restarts(
                        lambda t=tenant: handles[t].fit.remote(plans[t]), patience_s
                    )
                except lost as error:
                    answers[tenant] = error
        return answers

    return dispatch


def net_spec(
    model: str, width: int | None, key_lock: bool, key_dim: int, image_size: int, num_classes: int
) -> NetSpec:
    return NetSpec(
        model,
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        key_lock=KeyLockConfig(key_dim=key_dim) if key_lock else None,
    )


@task(name="start-federated-clients", **_OPTIONS)
def start_clients(
    tenants: Mapping[str, str],
    key_stores: Mapping[str, str],
    config: PlatformConfig,
    run_name: str,
    evaluation_sources: Mapping[str, str],
    encrypt: bool,
    max_images: int | None,
) -> list[str]:
    """Start (or find) each tenant's federated client; check it can read its images."""
    for tenant_id, source in tenants.items():
        lock_dir = config.tenant_home(tenant_id) / "federated" / run_name
        handle = federated_client(
            tenant_id,
            source,
            key_stores.get(tenant_id) or str(config.key_store_for(tenant_id)),
            str(lock_dir),
            evaluation_sources.get(tenant_id),
            encrypt,
            max_images,
        )
        call_surviving_restarts(lambda h=handle: h.describe.remote())
    return sorted(tenants)


@task(name="federated-round", task_run_name="round {round_index}", **_OPTIONS)
def federated_round(
    round_index: int, tenant_ids: list[str], config: FederatedConfig, checkpoint_dir: str
) -> dict[str, Any]:
    """One FedAvg round from the last checkpoint; writes this round's checkpoint."""
    import ray

    weights = (
        load_round(checkpoint_dir, round_index - 1)[0]
        if round_index > 1
        else initial_weights(config.net, config.seed)
    )
    handles = {t: ray.get_actor(client_name(t), namespace=NAMESPACE) for t in tenant_ids}
    weights, summary = run_round(tenant_ids, weights, config, round_index, ray_dispatch(handles))
    save_round(checkpoint_dir, round_index, weights, asdict(summary))
    return asdict(summary)


@task(name="federated-evaluate", **_OPTIONS)
def evaluate_clients(
    tenant_ids: list[str], config: FederatedConfig, checkpoint_dir: str, round_index: int
) -> dict[str, float]:
    """Each tenant's accuracy of the final global model with its own lock."""
    import ray

    weights = load_round(checkpoint_dir, round_index)[0]
    plan = RoundPlan(round_index, config.net, weights, config.training, config.seed)
    results = {}
    for tenant in tenant_ids:
        handle = ray.get_actor(client_name(tenant), namespace=NAMESPACE)
        results[tenant] = call_surviving_restarts(lambda h=handle: h.evaluate.remote(plan)).accuracy
    return results


@flow(name="federated-training", persist_result=False)
def federated_training(
    rounds: int,
    clients_per_round: int,
    tenants: dict[str, str],
    run_name: str = "federated",
    model: str = "lenet",
    width: int | None = None,
    key_lock: bool = True,
    key_dim: int = KeyLockConfig.key_dim,
    image_size: int = 32,
    num_classes: int = 10,
    local_epochs: int = LocalTraining.epochs,
    batch_size: int = LocalTraining.batch_size,
    learning_rate: float = LocalTraining.learning_rate,
    seed: int = 0,
    key_stores: dict[str, str] | None = None,
    evaluation_sources: dict[str, str] | None = None,
    encrypt: bool = False,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Train one model over the tenants' own images (`tenants`: tenant id → source, read only by
    the tenant's client); FedKL's lock with `key_lock`, plain FedAvg without. Resumes a run of
    the same `run_name` after its last checkpoint."""
    logger = get_run_logger()
    platform = PlatformConfig.from_env()
    if not tenants:
        raise PatchveilError("federated training needs at least one tenant (tenant id → source)")
    config = FederatedConfig(
        net=net_spec(model, width, key_lock, key_dim, image_size, num_classes),
        rounds=rounds,
        clients_per_round=clients_per_round,
        training=LocalTraining(local_epochs, batch_size, learning_rate),
        seed=seed,
    )
    checkpoint_dir = str(Path(platform.checkpoint_root) / "federated" / run_name)
    ensure_ray(platform)
    tenant_ids = start_clients(
        tenants, key_stores or {}, platform, run_name, evaluation_sources or {}, encrypt, max_images
    )
    done = latest_round(checkpoint_dir)
    if done:
        logger.info("run %s: resuming after round %d of %d", run_name, done, rounds)
    summaries = []
    for round_index in range(done + 1, rounds + 1):
        summary = federated_round(round_index, tenant_ids, config, checkpoint_dir)
        summaries.append(summary)
        logger.info(
            "round %d/%d: tenants %s%s, %d images, loss %.3f",
            round_index,
            rounds,
            ", ".join(summary["tenants"]),
            f" (lost: {', '.join(summary['failed'])})" if summary["failed"] else "",
            summary["num_samples"],
            summary["train_loss"],
        )
    accuracy = (
        evaluate_clients(tenant_ids, config, checkpoint_dir, rounds) if evaluation_sources else {}
    )
    return {
        "run_name": run_name,
        "checkpoint_dir": checkpoint_dir,
        "rounds_run": [s["round_index"] for s in summaries],
        "resumed_after": done,
        "last_checkpoint": latest_round(checkpoint_dir),
        "tenant_accuracy": accuracy,
    }
