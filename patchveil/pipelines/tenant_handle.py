"""The platform's handle on tenant actors: their names, finding or starting one, calling it.

Platform side. The actor class lives on the tenant's side (`patchveil.actors.tenant`) and is
reached from here through one lazy, named crossing, `_tenant_actor_class`, only when an actor
must be started: importing this module (or any flow) loads no key store and no cipher.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path
from typing import Any

from patchveil.config import RAY_NAMESPACE, PlatformConfig, check_tenant_id
from patchveil.errors import PatchveilError
from patchveil.protocol import ActorDescription

NAMESPACE = RAY_NAMESPACE
ACTOR_CPUS = 0.25
# A node that belongs to tenant <id> carries the custom resource `tenant:<id>`.
TENANT_RESOURCE_PREFIX = "tenant:"
# max_task_retries=0: a call that dies with the actor fails, and the Prefect task that made it
# retries against the restarted actor (which reloads its key from the store).
RESTART_OPTIONS: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0}


def actor_name(tenant_id: str) -> str:
    """The Ray actor name of a tenant, `tenant-<tenant_id>` (in namespace `patchveil`)."""
    return f"tenant-{check_tenant_id(tenant_id)}"


def actor_options(tenant_id: str, pin_to_tenant_node: bool = False) -> dict[str, Any]:
    """Ray options of a tenant's actor: its name, CPUs, lifetime and (optionally) its node.

    With `pin_to_tenant_node` the actor needs the custom resource `tenant:<id>`, so on a cluster
    it runs only on the tenant's own node.
    """
    options: dict[str, Any] = {
        "name": actor_name(tenant_id),
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "num_cpus": ACTOR_CPUS,
        # Detached: the actor is the tenant's long-lived service, found by name by every flow
        # run; a non-detached one would be collected as soon as the task that started it ends.
        "lifetime": "detached",
    }
    if pin_to_tenant_node:
        options["resources"] = {tenant_resource(tenant_id): 0.01}
    return options


def tenant_resource(tenant_id: str) -> str:
    """The custom Ray resource of a tenant's own node: `tenant:<tenant_id>`."""
    return f"{TENANT_RESOURCE_PREFIX}{check_tenant_id(tenant_id)}"


def pin_on_this_cluster(tenant_id: str) -> bool:
    """Whether a new actor of this tenant must be pinned to the tenant's node.

    A cluster with tenant nodes (any `tenant:<id>` resource) pins every tenant actor, and
    refuses a tenant whose node is not there rather than open its key store on another
    machine; a cluster without any (the embedded default) pins none.
    """
    import ray

    resources = ray.cluster_resources()
    if not any(name.startswith(TENANT_RESOURCE_PREFIX) for name in resources):
        return False
    if tenant_resource(tenant_id) not in resources:
        raise PatchveilError(
            f"this Ray cluster has tenant nodes, but none for tenant {tenant_id!r}; start the "
            f"tenant's node with `ray start --address=… --resources "
            f"'{{\"{tenant_resource(tenant_id)}\": 1}}'` (its key store stays on that node)"
        )
    return True


@cache
def _tenant_actor_class() -> Any:
    """THE crossing into the tenant's side: the actor class, made a Ray actor class.

    Imported here, lazily and by name, because Ray must ship the class to start an actor; the
    platform process never calls it directly, only through the handle Ray returns.
    """
    import ray

    from patchveil.actors.tenant import TenantActor

    return ray.remote(**RESTART_OPTIONS)(TenantActor)


def tenant_actor(
    tenant_id: str,
    key_store_path: str | Path | None,
    config: PlatformConfig,
    pin_to_tenant_node: bool | None = None,
) -> Any:
    """The tenant's actor handle: the running `tenant-<id>` actor, or a new one.

    `key_store_path=None` takes the running actor as it is, or starts one on the development
    key store `config.key_store_for(tenant_id)`. `pin_to_tenant_node=None` pins a new actor
    to the tenant's node when the cluster has tenant nodes (`pin_on_this_cluster`).
    """
    import ray

    name = actor_name(tenant_id)
    if not ray.is_initialized():
        raise PatchveilError(
            "Ray is not running in this process; call patchveil.pipelines.ray_runtime.ensure_ray "
            "first"
        )
    if key_store_path is None:
        with contextlib.suppress(ValueError):
            return ray.get_actor(name, namespace=NAMESPACE)
        key_store_path = config.key_store_for(tenant_id)
    wanted = str(Path(key_store_path).expanduser().absolute())
    if pin_to_tenant_node is None:
        pin_to_tenant_node = pin_on_this_cluster(tenant_id)
    options = actor_options(tenant_id, pin_to_tenant_node)
    handle = _tenant_actor_class().options(**options).remote(tenant_id, wanted, config)
    running: ActorDescription = call(handle.describe.remote())
    if (running.key_store, running.home) != (wanted, str(config.home)):
        raise PatchveilError(
            f"actor {name} already runs with key store {running.key_store} under platform "
            f"home {running.home}; it cannot switch to {wanted} under {config.home}: stop it "
            "first (ray.kill) or use its key store"
        )
    return handle


def existing_tenant_actor(tenant_id: str) -> Any:
    """The running actor of a tenant (an error if there is none)."""
    import ray

    try:
        return ray.get_actor(actor_name(tenant_id), namespace=NAMESPACE)
    except ValueError:
        raise PatchveilError(
            f"no actor runs for tenant {tenant_id!r}; start it with tenant_actor(...)"
        ) from None


def call(reference: Any, timeout: float | None = None) -> Any:
    """`ray.get` that re-raises a tenant-side user error as itself, without the remote traceback."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(reference, timeout=timeout)
    except RayTaskError as error:
        if isinstance(error.cause, PatchveilError):
            raise error.cause from None
        raise
