"""Where every span handed to delivery ended up: delivered, or dropped (and why).

Drops are also reported to the bound :class:`TelemetryHealth` (held back until
one is bound, so nothing counted before ``bind`` is lost); the first drop is
logged once, the rest are only counted (``swayscope_spans_dropped_total``).
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from swayscope.instrumentation.exporter import TelemetryHealth

log = logging.getLogger(__name__)

DropReason = Literal["queue_full", "export_failed", "shutdown", "make_failed", "trace_full"]
DROP_REASONS: tuple[DropReason, ...] = (
    "queue_full", "export_failed", "shutdown", "make_failed", "trace_full"
)

_WHY: dict[DropReason, str] = {
    "queue_full": "the span queue was full",
    "export_failed": "the collector did not accept them",
    "shutdown": "they were still queued when delivery was given up at shutdown",
    "make_failed": "the tracer failed to make them",
    "trace_full": "their forward call's trace had no room left for its workers' spans "
    "(max_spans_per_trace)",
}


class SpanAccounting:
    """Thread-safe counts of delivered and dropped spans."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: TelemetryHealth | None = None
        self._unreported = 0
        self._delivered = 0
        self._dropped: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        self._logged = False

    def bind(self, health: TelemetryHealth) -> None:
        """Report drops to ``health`` from now on, including those counted before."""
        with self._lock:
            self._health = health
            unreported, self._unreported = self._unreported, 0
        if unreported:
            health.record_spans_dropped(unreported)

    def delivered(self, n: int) -> None:
        with self._lock:
            self._delivered += n

    def dropped(self, n: int, reason: DropReason, error: BaseException | None = None) -> None:
        if n <= 0:
            return
        with self._lock:
            self._dropped[reason] += n
            health = self._health
            if health is None:
                self._unreported += n
            first, self._logged = not self._logged, True
        if health is not None:
            health.record_spans_dropped(n)
        if first:
            log.warning(
                "OpenTelemetry: %d spans were dropped: %s%s; the run goes on, further drops "
                "are counted, not logged (swayscope_spans_dropped_total)",
                n,
                _WHY[reason],
                f" ({type(error).__name__}: {error})" if error is not None else "",
            )

    @property
    def delivered_total(self) -> int:
        with self._lock:
            return self._delivered

    @property
    def dropped_total(self) -> int:
        with self._lock:
            return sum(self._dropped.values())

    def dropped_by_reason(self) -> dict[DropReason, int]:
        with self._lock:
            return dict(self._dropped)
