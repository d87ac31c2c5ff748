"""`ensure_ray` keeps a Ray that already runs in this process."""

from __future__ import annotations

from typing import Any

from patchveil.pipelines.ray_runtime import ensure_ray


def test_a_running_ray_is_kept(ray_session: Any) -> None:
    assert ensure_ray() == "running"
    assert ray_session.is_initialized()
