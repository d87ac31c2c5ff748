"""Faults injected into the tenant's side for tests only: an actor that dies half way through."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from patchveil.actors.tenant import TenantActor
from patchveil.config import PlatformConfig
from patchveil.datasets import storage
from patchveil.datasets.shards import ShardInfo
from patchveil.pipelines.tenant_handle import RESTART_OPTIONS, actor_options
from patchveil.protocol import ShardJob


@contextlib.contextmanager
def crash_halfway_through_first_write(marker: Path) -> Iterator[None]:
    """Kill this process half way through writing a shard, once: the marker file records that it
    did (and the pid that died), so a restarted process writes normally."""
    if marker.exists():
        yield
        return
    marker.write_text(str(os.getpid()))

    def write_half_then_die(stream: Any, data: memoryview) -> None:
        stream.write(data[: len(data) // 2])
        stream.flush()
        os._exit(1)

    original = storage._write_stream
    storage._write_stream = write_half_then_die
    try:
        yield
    finally:
        storage._write_stream = original


class CrashingTenantActor(TenantActor):
    """A tenant actor whose first shard write kills its process half way through."""

    def __init__(
        self, tenant_id: str, key_store_path: str, config: PlatformConfig, crash_marker: str
    ) -> None:
        super().__init__(tenant_id, key_store_path, config)
        self._crash_marker = Path(crash_marker)

    def _write_shard(self, table: pa.Table, job: ShardJob) -> ShardInfo:
        with crash_halfway_through_first_write(self._crash_marker):
            return super()._write_shard(table, job)


def start_crashing_tenant_actor(
    tenant_id: str, key_store: str | Path, config: PlatformConfig, crash_marker: Path
) -> Any:
    """Start the tenant's actor (same name and options as the platform's) as a crashing one."""
    import ray
    import ray.cloudpickle

    # Ray workers need not find `tests` on their path: ship this module's code by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    remote = ray.remote(**RESTART_OPTIONS)(CrashingTenantActor)
    return remote.options(**actor_options(tenant_id)).remote(
        tenant_id, str(Path(key_store).expanduser().absolute()), config, str(crash_marker)
    )
