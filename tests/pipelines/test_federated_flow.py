"""The federated flow on Ray: two tenants, two rounds, a resume, a dead actor; no key leaves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchveil.config import PlatformConfig
from patchveil.federated.checkpoints import latest_round
from patchveil.federated.messages import LocalTraining
from patchveil.federated.rounds import FederatedConfig, run_round
from patchveil.pipelines.federated import client_name, federated_training, ray_dispatch
from patchveil.pipelines.tenant_handle import NAMESPACE, call
from tests.federated.helpers import (
    IMAGE_SIZE,
    TINY_LOCKED,
    files_containing,
    key_vector_bytes,
    make_key_store,
    write_tenant_source,
)

TENANTS = ("clinic", "factory")
KEY_DIM = 8


@pytest.fixture(scope="module")
def tenants(platform: PlatformConfig, ray_session: Any) -> Iterator[dict[str, dict[str, str]]]:
    """Each tenant's source and key store, outside the platform's home; its clients killed after."""
    root = platform.home.parent / "tenant-side"
    made: dict[str, dict[str, str]] = {"sources": {}, "key_stores": {}}
    for seed, tenant in enumerate(TENANTS):
        made["sources"][tenant] = write_tenant_source(root / tenant / "images.npz", seed)
        made["key_stores"][tenant] = make_key_store(root / tenant / "keys", tenant)
    yield made
    for tenant in TENANTS:
        with contextlib.suppress(ValueError):
            ray_session.kill(ray_session.get_actor(client_name(tenant), namespace=NAMESPACE))


def _run(tenants: dict[str, dict[str, str]], rounds: int) -> dict[str, Any]:
    return federated_training(
        rounds=rounds,
        clients_per_round=2,
        tenants=tenants["sources"],
        run_name="tiny",
        width=4,
        key_dim=KEY_DIM,
        image_size=IMAGE_SIZE,
        num_classes=4,
        batch_size=8,
        learning_rate=1e-2,
        key_stores=tenants["key_stores"],
        evaluation_sources=tenants["sources"],
    )


def test_two_rounds_then_a_resume_after_a_dead_actor_leak_no_key(
    tenants: dict[str, dict[str, str]],
    platform: PlatformConfig,
    prefect_harness: dict[str, Path],
    ray_session: Any,
) -> None:
    first = _run(tenants, rounds=2)
    assert first["rounds_run"] == [1, 2] and first["last_checkpoint"] == 2
    assert set(first["tenant_accuracy"]) == set(TENANTS)
    # A tenant's client dies between runs: Ray restarts it (key from its store, lock from its
    # folder) and the rerun resumes after the last checkpoint.
    ray_session.kill(
        ray_session.get_actor(client_name("clinic"), namespace=NAMESPACE), no_restart=False
    )
    second = _run(tenants, rounds=3)
    assert second["resumed_after"] == 2 and second["rounds_run"] == [3]
    assert latest_round(second["checkpoint_dir"]) == 3
    for tenant in TENANTS:
        secret = key_vector_bytes(tenants["key_stores"][tenant], tenant, KEY_DIM)
        for searched in (platform.home, prefect_harness["home"], prefect_harness["database"]):
            assert files_containing(searched, secret) == [], (tenant, searched)


class _KillsOnFirstCall:
    """A handle whose first `fit` call kills the actor right after sending it (mid-round)."""

    def __init__(self, handle: Any, ray: Any) -> None:
        self._handle, self._ray, self.killed = handle, ray, False
        self.fit = self

    def remote(self, plan: Any) -> Any:
        reference = self._handle.fit.remote(plan)
        if not self.killed:
            self.killed = True
            self._ray.kill(self._handle, no_restart=False)
        return reference


def test_a_tenant_actor_that_dies_mid_round_is_asked_again(
    tenants: dict[str, dict[str, str]], ray_session: Any
) -> None:
    handles: dict[str, Any] = {
        t: ray_session.get_actor(client_name(t), namespace=NAMESPACE) for t in TENANTS
    }
    if not all(handles.values()):
        pytest.skip("needs the clients of the flow test")
    before = call(handles["factory"].describe.remote()).pid
    handles["factory"] = _KillsOnFirstCall(handles["factory"], ray_session)
    config = FederatedConfig(TINY_LOCKED, rounds=1, training=LocalTraining(1, 8, 1e-2))
    from patchveil.federated.rounds import initial_weights

    _, summary = run_round(
        list(TENANTS), initial_weights(TINY_LOCKED, 0), config, 1, ray_dispatch(handles)
    )
    assert handles["factory"].killed
    assert set(summary.tenants) == set(TENANTS) and summary.failed == ()
    restarted = ray_session.get_actor(client_name("factory"), namespace=NAMESPACE)
    assert call(restarted.describe.remote()).pid != before
