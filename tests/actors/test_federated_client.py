"""The tenant's federated client: the key and the lock stay inside, the shared weights come out."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from patchveil.actors.federated_client import FederatedClient
from patchveil.errors import PatchveilError
from patchveil.federated.messages import LocalTraining, RoundPlan
from patchveil.federated.rounds import initial_weights
from patchveil.models.key_lock import KeyLockConfig
from patchveil.models.small_nets import create_net
from patchveil.tenants.key_lock import key_vector
from patchveil.tenants.keystore import KeyStore
from tests.federated.helpers import (
    TINY_LOCKED,
    key_vector_bytes,
    make_key_store,
    write_tenant_source,
)


@pytest.fixture
def client(tmp_path: Path) -> FederatedClient:
    store = make_key_store(tmp_path / "keys", "clinic")
    source = write_tenant_source(tmp_path / "clinic.npz", seed=1)
    return FederatedClient("clinic", store, source, source, str(tmp_path / "lock"))


def _plan(round_index: int = 1) -> RoundPlan:
    weights = initial_weights(TINY_LOCKED, seed=0)
    return RoundPlan(round_index, TINY_LOCKED, weights, LocalTraining(1, 8, 1e-2), seed=0)


def test_an_update_holds_every_shared_weight_and_no_lock_or_key(client: FederatedClient) -> None:
    update = client.fit(_plan())
    names = {name for name, _ in update.weights}
    assert names == {name for name, _ in _plan().global_weights}
    assert not any("scale_layers" in n or "shift_layers" in n for n in names)
    assert update.num_samples == 24 and np.isfinite(update.train_loss)
    secret = key_vector_bytes(str(client._tenant.store.root), "clinic", 8)
    assert secret not in pickle.dumps(update)
    lock = client._models[TINY_LOCKED].key_lock
    for parameter in lock.parameters():
        assert parameter.detach().numpy().tobytes() not in pickle.dumps(update)


def test_the_lock_survives_a_restart_from_the_tenants_folder(
    client: FederatedClient, tmp_path: Path
) -> None:
    client.fit(_plan())
    trained = {k: v.clone() for k, v in client._models[TINY_LOCKED].key_lock.state_dict().items()}
    again = FederatedClient(
        "clinic", str(tmp_path / "keys"), str(tmp_path / "clinic.npz"), None, str(tmp_path / "lock")
    )
    restored = again._model(TINY_LOCKED).key_lock.state_dict()
    assert all(torch.equal(trained[k], restored[k]) for k in trained)


def test_the_key_vector_is_the_keys_and_differs_between_tenants(tmp_path: Path) -> None:
    make_key_store(tmp_path / "a", "a")
    make_key_store(tmp_path / "b", "b")
    first = key_vector(KeyStore(tmp_path / "a").load("a"), 16)
    assert np.array_equal(first, key_vector(KeyStore(tmp_path / "a").load("a"), 16))
    assert not np.array_equal(first, key_vector(KeyStore(tmp_path / "b").load("b"), 16))
    assert first.dtype == np.float32 and np.all(np.abs(first) <= 1)
    with pytest.raises(PatchveilError, match="1 to 4096"):
        key_vector(KeyStore(tmp_path / "a").load("a"), 0)


def test_the_lock_starts_from_the_key_not_from_the_platforms_seed(client: FederatedClient) -> None:
    torch.manual_seed(0)
    platform_model = create_net(TINY_LOCKED)
    tenant_model = client._model(TINY_LOCKED)
    assert not torch.equal(
        platform_model.key_lock.scale_layers[0].weight, tenant_model.key_lock.scale_layers[0].weight
    )
    assert isinstance(TINY_LOCKED.key_lock, KeyLockConfig)


def test_evaluation_uses_the_tenants_lock(client: FederatedClient) -> None:
    result = client.evaluate(_plan())
    assert result.images == 24 and 0 <= result.accuracy <= 1
    assert "clinic" in repr(client) and "key" not in repr(client).lower()


def test_a_tenant_can_train_on_its_own_ciphertext(tmp_path: Path) -> None:
    from patchveil.tenants.keys import CipherSpec

    KeyStore(tmp_path / "keys").create("bank", CipherSpec("conventional", 4, 16))
    source = write_tenant_source(tmp_path / "bank.npz", seed=3)
    client = FederatedClient("bank", str(tmp_path / "keys"), source, encrypt=True)
    plain = client._training_data().images
    assert not np.array_equal(client._inputs(plain), plain)
    update = client.fit(_plan())
    assert update.num_samples == 24 and np.isfinite(update.train_loss)
