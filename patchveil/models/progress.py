"""Per-epoch progress lines from Ray Train's rank-0 worker to the driver's console, without the
rest of the workers' output (Ray Data's and Ray Train's logs, warnings): rank 0 posts each line
to a small named actor (a board); a thread in the driver takes the lines and writes them to its
own stdout while the run lasts. The driver can then start Ray with `log_to_driver=False`."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

BOARD_PREFIX = "patchveil-progress-"
POLL_S = 0.5


class ProgressBoard:
    """The actor: lines posted by the training workers, taken in order by the driver."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def post(self, line: str) -> None:
        self._lines.append(line)

    def take(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines


def post_progress(board: str | None, line: str) -> None:
    """From a worker: `line` to the run's board, or to this process's stdout without one (an
    in-process run, or nobody echoing: Ray forwards it only with `log_to_driver`)."""
    if board is not None:
        import ray

        try:
            ray.get(ray.get_actor(board).post.remote(line))
            return
        except ValueError:  # the board is gone (its driver stopped echoing): stdout instead
            pass
    # Not `print`: Ray Train patches it in its workers to log *and* echo (the line came twice).
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def echoed_progress(run_name: str, stream: TextIO | None = None) -> Iterator[str]:
    """A board named for the run, and a thread writing its lines to `stream` (stdout) every
    `POLL_S` and once more at the end. Yields the board's name for the workers' config."""
    import ray

    name = f"{BOARD_PREFIX}{run_name}"
    board = ray.remote(num_cpus=0)(ProgressBoard).options(name=name).remote()
    out = stream or sys.stdout
    stop = threading.Event()

    def echo() -> None:
        while True:
            stopping = stop.wait(POLL_S)
            for line in ray.get(board.take.remote()):
                out.write(line + "\n")
                out.flush()
            if stopping:
                return

    thread = threading.Thread(target=echo, name=f"progress {run_name}", daemon=True)
    thread.start()
    try:
        yield name
    finally:
        stop.set()
        thread.join(timeout=10)
        ray.kill(board)
