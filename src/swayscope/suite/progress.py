"""Run progress as an exporter: a live bar on a terminal, plain log lines otherwise.

It consumes the same events as every other exporter (probe start/end, forward
calls), so the runner never has to report progress by hand. It follows one run: the
one its ``run_id`` names, else the first whose start it sees (several runs may share an
instrumentation at once, a sweep's adapters on a pool of workers).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from swayscope.instrumentation.events import (
    Event,
    ForwardCall,
    ProbeEnded,
    ProbeStarted,
    RunStarted,
)
from swayscope.instrumentation.exporter import Exporter

log = logging.getLogger(__name__)


class RunMonitor(Exporter):
    """Shows probes done/total, forward calls, elapsed and ETA; remembers the run's trace id."""

    name = "progress"

    def __init__(
        self, total_probes: int, *, live: bool | None = None, run_id: str | None = None
    ) -> None:
        self.total = total_probes
        self.run_id = run_id
        #: Before each log line: the adapter, in a sweep (its runs' lines interleave).
        self._prefix = ""
        self.live = sys.stderr.isatty() if live is None else live
        self.trace_id: str | None = None
        self.forward_calls = 0
        self.done = 0
        self._t0 = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("probes · {task.fields[calls]} forward calls"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=self.total, calls=0)

    def export(self, event: Event) -> None:
        run_id = getattr(event, "run_id", None)
        if isinstance(event, RunStarted) and self.run_id is None:
            self.run_id = run_id
        if run_id != self.run_id:
            return  # another run's (or no run's) event
        if isinstance(event, ForwardCall):
            self.forward_calls += 1
            if self._progress is not None:
                self._progress.update(self._task, calls=self.forward_calls)
        elif isinstance(event, RunStarted):
            self.trace_id = event.trace_id
            self._prefix = f"{event.adapter}: " if event.sweep_id and event.adapter else ""
            self._t0 = time.monotonic()
            if self.live:
                self._start_bar()
        elif isinstance(event, ProbeStarted):
            if self._progress is not None:
                self._progress.update(self._task, description=event.probe)
            else:
                log.info("%sprobe %d/%d %s: started", self._prefix, event.index + 1, self.total,
                         event.probe)
        elif isinstance(event, ProbeEnded):
            self.done = event.done
            if self._progress is not None:
                self._progress.update(self._task, completed=event.done, calls=self.forward_calls)
            elif event.status == "not_run":
                log.info("%sprobe %s: interrupted, not run", self._prefix, event.probe)
            else:
                elapsed = time.monotonic() - self._t0
                eta = elapsed / event.done * (self.total - event.done) if event.done else 0.0
                log.info(
                    "%sprobe %d/%d %s: %s in %.2fs · %d forward calls · elapsed %.1fs · ETA %.1fs",
                    self._prefix, event.done, self.total, event.probe, event.status,
                    event.duration_s,
                    self.forward_calls, elapsed, eta,
                )

    def shutdown(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


__all__ = ["RunMonitor"]
