"""Training progress: a live bar with the loss on a terminal, a few log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from swayscope.training.loop import StepCallback

log = logging.getLogger(__name__)

#: Without a terminal, log this many evenly spaced progress lines per run.
LOG_LINES = 5


@contextmanager
def loss_progress(total_steps: int, description: str, *, live: bool | None = None
                  ) -> Iterator[StepCallback]:
    """Yield an ``on_step(step, loss)`` callback that shows steps done, the loss, elapsed
    time and ETA: a transient rich bar on a terminal (stderr), else log lines."""
    live = sys.stderr.isatty() if live is None else live
    if not live:
        every = max(1, total_steps // LOG_LINES)
        t0 = time.monotonic()

        def log_step(step: int, loss: float) -> None:
            if step % every == 0 or step == total_steps:
                log.info(
                    "%s: step %d/%d, loss %.3f, %.1f s",
                    description, step, total_steps, loss, time.monotonic() - t0,
                )

        yield log_step
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps · loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task(description, total=total_steps, loss="-")

    def show_step(step: int, loss: float) -> None:
        progress.update(task, completed=step, loss=f"{loss:.3f}")

    with progress:
        yield show_step


__all__ = ["LOG_LINES", "loss_progress"]
