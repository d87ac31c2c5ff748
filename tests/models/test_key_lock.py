"""The key lock: where it sits, what it keeps out of the shared state, and that the key matters."""

from __future__ import annotations

import pytest
import torch

from patchveil.errors import PatchveilError
from patchveil.models.key_lock import (
    KeyLock,
    KeyLockConfig,
    key_locks,
    load_shared_state,
    lock_parameter_names,
    lock_state,
    set_model_key,
    shared_state,
)
from patchveil.models.small_nets import NetSpec, available_nets, create_net

LOCK = KeyLockConfig(key_dim=8, hidden=8)
WIDTHS = {"lenet": 4, "resnet18": 4, "vit": 32}


@pytest.mark.parametrize("name", ["lenet", "resnet18", "vit"])
def test_every_net_builds_with_and_without_a_lock(name: str) -> None:
    assert name in available_nets()
    images = torch.rand(2, 3, 16, 16)
    for lock in (None, LOCK):
        model = create_net(NetSpec(name, image_size=16, width=WIDTHS[name], key_lock=lock))
        assert model(images).shape == (2, 10)
        assert len(key_locks(model)) == (1 if lock else 0)


@pytest.mark.parametrize("name", ["lenet", "resnet18", "vit"])
def test_the_shared_state_holds_every_parameter_but_the_locks(name: str) -> None:
    model = create_net(NetSpec(name, image_size=16, width=WIDTHS[name], key_lock=LOCK))
    private = lock_parameter_names(model)
    assert private and all("scale_layers" in n or "shift_layers" in n for n in private)
    shared, kept = shared_state(model), lock_state(model)
    assert set(shared) | set(kept) == set(model.state_dict())
    assert not set(shared) & set(kept)
    # The key is a non-persistent buffer: in no state dict at all.
    assert not any(n.endswith(".key") for n in model.state_dict())


def test_the_lock_sits_after_the_first_convolution_and_the_patch_embedding() -> None:
    lenet = create_net(NetSpec("lenet", image_size=16, width=4, key_lock=LOCK))
    assert isinstance(lenet.key_lock, KeyLock) and lenet.key_lock.layout == "channels"
    vit = create_net(NetSpec("vit", image_size=16, width=32, key_lock=LOCK))
    assert isinstance(vit.patch_embed.norm, KeyLock) and vit.patch_embed.norm.layout == "tokens"


def test_another_key_gives_another_model() -> None:
    torch.manual_seed(0)
    model = create_net(NetSpec("lenet", image_size=16, width=4, key_lock=LOCK))
    images = torch.rand(4, 3, 16, 16)
    set_model_key(model, torch.ones(8))
    first = model(images)
    set_model_key(model, -torch.ones(8))
    assert not torch.allclose(first, model(images))


def test_loading_the_global_weights_keeps_the_tenants_lock() -> None:
    torch.manual_seed(0)
    tenant = create_net(NetSpec("lenet", image_size=16, width=4, key_lock=LOCK))
    platform = create_net(NetSpec("lenet", image_size=16, width=4, key_lock=LOCK))
    before = lock_state(tenant)
    load_shared_state(tenant, shared_state(platform))
    after = lock_state(tenant)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert torch.equal(tenant.fc.weight, platform.fc.weight)


def test_a_state_with_lock_parameters_or_another_architecture_is_refused() -> None:
    model = create_net(NetSpec("lenet", image_size=16, width=4, key_lock=LOCK))
    with pytest.raises(PatchveilError, match="must not hold key-lock"):
        load_shared_state(model, model.state_dict())
    other = create_net(NetSpec("lenet", image_size=16, width=6, key_lock=LOCK))
    with pytest.raises((PatchveilError, RuntimeError)):
        load_shared_state(model, shared_state(other))
    with pytest.raises(PatchveilError, match="key vector of 8"):
        set_model_key(model, torch.zeros(3))
    with pytest.raises(PatchveilError, match="unknown federated model"):
        NetSpec("alexnet")


def test_the_like_for_like_baseline_has_a_plain_norm_where_the_lock_sits() -> None:
    baseline = create_net(NetSpec("lenet", image_size=16, width=4, stem_norm=True))
    assert isinstance(baseline.key_lock, torch.nn.BatchNorm2d)
    assert not lock_parameter_names(baseline)
    assert baseline(torch.rand(2, 3, 16, 16)).shape == (2, 10)
