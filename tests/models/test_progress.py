"""Per-epoch lines from a worker to the driver's console through a progress board, with Ray
forwarding no worker output (the session's Ray starts with log_to_driver=False)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from patchveil.models.progress import BOARD_PREFIX, echoed_progress, post_progress


def test_a_workers_lines_are_echoed_in_order(ray_session: Any) -> None:
    @ray_session.remote(num_cpus=0)
    def worker(board: str) -> None:
        for epoch in (1, 2, 3):
            post_progress(board, f"epoch {epoch}: loss 1.000")

    echoed = io.StringIO()
    with echoed_progress("unit-run", echoed) as board:
        assert board == f"{BOARD_PREFIX}unit-run"
        ray_session.get(worker.remote(board))
    assert echoed.getvalue().splitlines() == [f"epoch {n}: loss 1.000" for n in (1, 2, 3)]


def test_without_a_board_the_line_goes_to_stdout(
    ray_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    post_progress(None, "epoch 1: in process")
    post_progress(f"{BOARD_PREFIX}no-such-run", "epoch 2: board gone")
    assert capsys.readouterr().out.splitlines() == ["epoch 1: in process", "epoch 2: board gone"]
