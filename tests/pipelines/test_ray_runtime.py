"""`ensure_ray` keeps a Ray that already runs in this process."""

from __future__ import annotations

from typing import Any

from patchveil.pipelines.ray_runtime import ensure_ray


def test_a_running_ray_is_kept(ray_session: Any) -> None:
    assert ensure_ray() == "running"
    assert ray_session.is_initialized()


def test_local_workers_silence_the_state_api_poller_only() -> None:
    import logging

    from patchveil.pipelines.ray_runtime import _STATE_API_POLLERS, quiet_local_worker_logs

    quiet_local_worker_logs()
    for name in _STATE_API_POLLERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("ray.train").getEffectiveLevel() < logging.ERROR
