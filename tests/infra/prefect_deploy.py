"""`prefect deploy`, with a fix for Prefect 3.8.8's deploy command (run by test_prefect_server.py).

After creating each deployment, `prefect deploy` asks for the pool's online workers with
`limit=None`, which Prefect 3.8.8's own server refuses (HTTP 422), so the command fails after the
first deployment. This wrapper sends the server's default page instead and runs the real command.
"""

from __future__ import annotations

from typing import Any

from prefect.cli import app
from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient

WORKERS_PAGE = 200
_read_workers = WorkPoolAsyncClient.read_workers_for_work_pool


async def _read_workers_paged(
    self: WorkPoolAsyncClient,
    work_pool_name: str,
    worker_filter: Any = None,
    offset: int | None = None,
    limit: int | None = None,
) -> Any:
    return await _read_workers(
        self, work_pool_name, worker_filter, offset=offset or 0, limit=limit or WORKERS_PAGE
    )


if __name__ == "__main__":
    WorkPoolAsyncClient.read_workers_for_work_pool = _read_workers_paged  # type: ignore[method-assign]
    app()  # reads sys.argv
