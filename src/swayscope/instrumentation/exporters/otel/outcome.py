"""What the run and probe spans say at their end: probes done and errored, and why.

The run span is ERROR when the run raised or any probe errored, its description
counting them (``2 of 5 probes errored``), its attributes too
(``swayscope.run.probes_done``, ``swayscope.run.probes_errored``). The run's
trace holds only the run span, so it also repeats the exception events of its
first errored probes (each with ``swayscope.probe``). A probe stopped by Ctrl-C
(``not_run``) is neither done nor errored. Every exception event is made of the
core's redacted texts (:func:`.attributes.exception_event`).
"""

from __future__ import annotations

import threading

from swayscope.instrumentation.events import ProbeEnded, RunEnded
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.layout import Failure

#: Errored probes whose exception events the run span repeats (its count is complete).
RUN_PROBE_EXCEPTIONS_KEPT = 10


def _exception(error: str | None, stack: str | None, what: str) -> attr.Attributes:
    return attr.exception_event(error or f"{what} error", stack)


class RunOutcome:
    """A run's probe outcomes as they end (thread-safe: probes may end on any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = self._done = self._errored = 0
        self._exceptions: list[tuple[attr.Attributes, int]] = []

    def start(self, total_probes: int) -> None:
        with self._lock:
            self._total, self._done, self._errored = total_probes, 0, 0
            self._exceptions = []

    def probe_ended(self, ev: ProbeEnded) -> Failure | None:
        """Count the probe; what its span reports when it errored."""
        if ev.status == "not_run":
            return None
        failure: Failure | None = None
        with self._lock:
            self._done += 1
            if ev.status == "error":
                exception = _exception(ev.error, ev.error_stack, "probe")
                failure = Failure(ev.error or "probe error", ((exception, ev.end_ns),))
                self._errored += 1
                if len(self._exceptions) < RUN_PROBE_EXCEPTIONS_KEPT:
                    self._exceptions.append(({**exception, attr.PROBE: ev.probe}, ev.end_ns))
        return failure

    def run_ended(self, ev: RunEnded) -> tuple[attr.Attributes, Failure | None]:
        """The run span's closing attributes, and its failure if it raised or probes errored."""
        with self._lock:
            total, done, errored = self._total, self._done, self._errored
            exceptions = list(self._exceptions)
        reasons = []
        if ev.status == "error":
            reasons.append(ev.error or "run error")
            exceptions.insert(0, (_exception(ev.error, ev.error_stack, "run"), ev.end_ns))
        if errored:
            reasons.append(attr.probes_errored(errored, total or done))
        failure = Failure("; ".join(reasons), tuple(exceptions)) if reasons else None
        return attr.run_ended(ev, done, errored), failure
