"""FedAvg on the platform's side: weighted averaging, sampling, checkpoints and resuming."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from patchveil.actors.federated_client import FederatedClient
from patchveil.errors import PatchveilError
from patchveil.federated.averaging import weighted_average
from patchveil.federated.checkpoints import latest_round, load_round, summaries
from patchveil.federated.messages import ClientUpdate, LocalTraining, RoundPlan
from patchveil.federated.rounds import (
    FederatedConfig,
    FederatedRoundError,
    run_rounds,
    sample_tenants,
)
from tests.federated.helpers import (
    TINY_LOCKED,
    files_containing,
    key_vector_bytes,
    make_key_store,
    write_tenant_source,
)


def _update(tenant: str, count: int, value: float) -> ClientUpdate:
    weights = (("w", np.full(3, value, np.float32)), ("n", np.array(count, np.int64)))
    return ClientUpdate(tenant, 1, count, weights, 0.0)


def test_the_average_is_weighted_by_image_count() -> None:
    averaged = dict(weighted_average([_update("a", 1, 0.0), _update("b", 3, 4.0)]))
    assert np.allclose(averaged["w"], 3.0) and averaged["w"].dtype == np.float32
    assert averaged["n"] == 3  # a counter takes its largest value


def test_an_update_with_other_names_is_refused() -> None:
    odd = ClientUpdate("b", 1, 2, (("w", np.zeros(3, np.float32)), ("lock", np.zeros(1))), 0.0)
    with pytest.raises(PatchveilError, match="every parameter except the key lock"):
        weighted_average([_update("a", 1, 0.0), odd])
    with pytest.raises(PatchveilError, match="at least one"):
        weighted_average([])


def test_sampling_is_seeded_and_bounded() -> None:
    tenants = ["a", "b", "c", "d"]
    assert sample_tenants(tenants, 2, 0, 1) == sample_tenants(tenants, 2, 0, 1)
    assert len(sample_tenants(tenants, 2, 0, 1)) == 2
    assert sample_tenants(tenants, 9, 0, 1) == tenants


@pytest.fixture
def clients(tmp_path: Path) -> dict[str, FederatedClient]:
    made = {}
    for seed, tenant in enumerate(("clinic", "factory")):
        store = make_key_store(tmp_path / tenant / "keys", tenant)
        source = write_tenant_source(tmp_path / tenant / "images.npz", seed, count=16 + 8 * seed)
        made[tenant] = FederatedClient(tenant, store, source, None, str(tmp_path / tenant / "lock"))
    return made


def _in_process(clients: Mapping[str, FederatedClient]):  # type: ignore[no-untyped-def]
    def dispatch(plans: Mapping[str, RoundPlan]) -> dict[str, ClientUpdate | BaseException]:
        return {tenant: clients[tenant].fit(plan) for tenant, plan in plans.items()}

    return dispatch


def test_two_rounds_checkpoint_and_a_rerun_resumes(
    clients: dict[str, FederatedClient], tmp_path: Path
) -> None:
    config = FederatedConfig(TINY_LOCKED, rounds=1, training=LocalTraining(1, 8, 1e-2))
    folder = tmp_path / "platform" / "checkpoints"
    seen: list[int] = []
    run_rounds(
        list(clients), config, _in_process(clients), folder, lambda s: seen.append(s.round_index)
    )
    assert latest_round(folder) == 1
    longer = FederatedConfig(TINY_LOCKED, rounds=2, training=LocalTraining(1, 8, 1e-2))
    weights, done = run_rounds(list(clients), longer, _in_process(clients), folder)
    assert [s.round_index for s in done] == [2] and seen == [1]
    assert done[0].num_samples == 16 + 24 and set(done[0].tenants) == set(clients)
    assert [s["round_index"] for s in summaries(folder)] == [1, 2]
    assert {n for n, _ in weights} == {n for n, _ in load_round(folder, 2)[0]}
    for tenant in clients:
        secret = key_vector_bytes(str(tmp_path / tenant / "keys"), tenant, 8)
        assert files_containing(tmp_path / "platform", secret) == []


def test_a_round_goes_on_without_a_lost_tenant_and_stops_without_any(
    clients: dict[str, FederatedClient], tmp_path: Path
) -> None:
    config = FederatedConfig(TINY_LOCKED, rounds=1, training=LocalTraining(1, 8, 1e-2))

    def one_lost(plans: Mapping[str, RoundPlan]) -> dict[str, ClientUpdate | BaseException]:
        return {"clinic": clients["clinic"].fit(plans["clinic"]), "factory": RuntimeError("dead")}

    _, done = run_rounds(list(clients), config, one_lost, tmp_path / "a")
    assert done[0].tenants == ("clinic",) and done[0].failed == ("factory",)
    with pytest.raises(FederatedRoundError, match="no tenant returned"):
        run_rounds(list(clients), config, lambda plans: {}, tmp_path / "b")
    assert latest_round(tmp_path / "b") == 0
