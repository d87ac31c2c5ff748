"""When a new tenant actor is pinned to its tenant's node: decided from the cluster's resources."""

from __future__ import annotations

import pytest

from patchveil.errors import PatchveilError
from patchveil.pipelines import tenant_handle
from patchveil.pipelines.tenant_handle import actor_options, pin_on_this_cluster


def cluster_with(monkeypatch: pytest.MonkeyPatch, resources: dict[str, float]) -> None:
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(resources))


def test_a_cluster_without_tenant_nodes_pins_no_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_with(monkeypatch, {"CPU": 4.0, "memory": 1e9})
    assert pin_on_this_cluster("alpha") is False
    assert "resources" not in actor_options("alpha", pin_to_tenant_node=False)


def test_a_cluster_with_tenant_nodes_pins_each_actor_to_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster_with(monkeypatch, {"CPU": 4.0, "platform": 1.0, "tenant:alpha": 1.0, "tenant:bolt": 1})
    assert pin_on_this_cluster("alpha") is True
    assert actor_options("alpha", pin_to_tenant_node=True)["resources"] == {"tenant:alpha": 0.01}


def test_a_tenant_without_its_node_is_refused_not_placed_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its key store must not be opened on another machine, and a pinned actor without its
    node would wait forever: the flow stops with what to start."""
    cluster_with(monkeypatch, {"CPU": 4.0, "platform": 1.0, "tenant:alpha": 1.0})
    with pytest.raises(PatchveilError, match=r"none for tenant 'carol'.*tenant:carol"):
        pin_on_this_cluster("carol")
    assert tenant_handle.tenant_resource("carol") == "tenant:carol"
