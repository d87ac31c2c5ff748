"""Which deployments the endpoint is built from, without starting Serve: the model in a deployment
of its own (the default) or in the gateway (`colocate_model`), and direct ingress's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.serve.app import build_app, build_application
from patchveil.serve.model_host import Forward, ModelRef, split_forward
from patchveil.serve.settings import DIRECT_INGRESS_ENV, GATEWAY_CPUS, ServeSettings


def _gateway(tmp_path: Path, **overrides: Any) -> Any:
    """The gateway deployment of the application built for model version 3."""
    settings = ServeSettings(**{"he_models": (), "model_cpus": 2.0, **overrides})
    application = build_application(
        ModelRef("m", 3, "/checkpoints/m-3"), settings, PlatformConfig(home=tmp_path)
    )
    return application._bound_deployment  # Serve has no public getter for it


def test_colocate_model_puts_one_cpu_replica_in_the_gateway(tmp_path: Path) -> None:
    assert ServeSettings(colocate_model=True).colocated
    gateway = _gateway(tmp_path, colocate_model=True)
    assert gateway.name == "gateway"
    runner, _, he_runner = gateway.init_args
    assert runner is None and he_runner is None
    # The version travels as the gateway's user_config: a swap reconfigures it in place.
    assert gateway.user_config["model"]["version"] == 3
    assert gateway.ray_actor_options["num_cpus"] == GATEWAY_CPUS + 2.0
    assert "runtime_env" not in gateway.ray_actor_options


@pytest.mark.parametrize(
    "overrides",
    [{}, {"colocate_model": True, "model_replicas": 2}, {"colocate_model": True, "use_gpu": True}],
)
def test_by_default_or_with_more_replicas_or_a_gpu_the_model_is_a_deployment(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    assert not ServeSettings(**overrides).colocated
    gateway = _gateway(tmp_path, **overrides)
    runner = gateway.init_args[0]._bound_deployment
    assert runner.name == "model"
    assert runner.num_replicas == overrides.get("model_replicas", 1)
    assert runner.user_config["model"]["version"] == 3
    assert gateway.user_config is None
    assert gateway.ray_actor_options["num_cpus"] == GATEWAY_CPUS


def test_direct_ingress_sets_serves_flag_on_the_gateway(tmp_path: Path) -> None:
    assert "runtime_env" not in _gateway(tmp_path).ray_actor_options
    gateway = _gateway(tmp_path, direct_ingress=True)
    assert gateway.ray_actor_options["runtime_env"] == {"env_vars": DIRECT_INGRESS_ENV}
    assert DIRECT_INGRESS_ENV["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"


def test_a_serve_config_cannot_ask_for_direct_ingress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHVEIL_HOME", str(tmp_path))
    with pytest.raises(PatchveilError, match="direct_ingress"):
        build_app({"model": "m", "direct_ingress": "true"})


def test_one_forward_is_cut_back_per_request() -> None:
    answer = Forward(np.arange(12, dtype=np.float32).reshape(6, 2), np.zeros((6, 4), np.float32), 7)
    parts = split_forward(answer, [1, 3, 2])
    assert [len(part.probabilities) for part in parts] == [1, 3, 2]
    assert np.array_equal(
        np.concatenate([part.probabilities for part in parts]), answer.probabilities
    )
    assert {part.model_version for part in parts} == {7}
