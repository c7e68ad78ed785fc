"""The one small interface between the core and every telemetry consumer.

Shaped like OpenTelemetry's ``SpanExporter``: ``export`` receives each event,
``force_flush`` and ``shutdown`` end its life. The core never imports an
exporter's library; a user adds a fourth exporter by subclassing
:class:`Exporter` and passing it to ``BackendInstrumentation(exporters=[...])``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

from swayscope.instrumentation.events import Event
from swayscope.instrumentation.tracing import TraceSettings

log = logging.getLogger(__name__)


class TelemetryHealth:
    """Thread-safe counters about telemetry itself: exporter failures and dropped spans.

    The core owns one and binds it to each exporter, so an exporter can report
    its own losses (dropped spans) and a metrics exporter can publish everyone's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._spans_dropped = 0
        self._logged: set[str] = set()

    def record_error(self, exporter: str, exc: BaseException) -> None:
        """Count one failure of ``exporter``; log only its first one."""
        with self._lock:
            self._errors[exporter] = self._errors.get(exporter, 0) + 1
            first = exporter not in self._logged
            self._logged.add(exporter)
        if first:
            log.warning(
                "telemetry exporter %r failed (%s: %s); the run goes on, further "
                "failures of this exporter are counted, not logged",
                exporter,
                type(exc).__name__,
                exc,
            )

    def record_spans_dropped(self, n: int) -> None:
        with self._lock:
            self._spans_dropped += n

    def exporter_errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    @property
    def spans_dropped(self) -> int:
        with self._lock:
            return self._spans_dropped


class Exporter:
    """Receives every core event. Subclasses override ``export``; the rest is optional.

    ``name`` labels this exporter in error counts. An exporter that makes spans sets
    ``trace_settings``: the core then lays traces out (:mod:`.tracing`) and puts the ids
    on every event, for it and for every other exporter alike. Events are read-only; no
    exporter depends on another's order.
    """

    name: str = "exporter"
    trace_settings: TraceSettings | None = None

    def bind(self, health: TelemetryHealth) -> None:
        """Called once when the exporter is attached to a core."""
        self.health = health

    def export(self, event: Event) -> None:
        raise NotImplementedError

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver what is buffered; True when everything went out in time."""
        return True

    def shutdown(self) -> None:
        """Flush and release resources; further events may be ignored."""


class ExporterSet:
    """Fans one event out to several exporters; a failing exporter never stops the run."""

    def __init__(self, health: TelemetryHealth, exporters: Iterable[Exporter] = ()) -> None:
        self.health = health
        self._exporters: list[Exporter] = []
        for exporter in exporters:
            self.add(exporter)

    def add(self, exporter: Exporter) -> None:
        exporter.bind(self.health)
        self._exporters.append(exporter)

    def remove(self, exporter: Exporter) -> None:
        self._exporters = [e for e in self._exporters if e is not exporter]

    def __bool__(self) -> bool:
        return bool(self._exporters)

    def __iter__(self) -> Iterator[Exporter]:
        return iter(list(self._exporters))

    def emit(self, event: Event) -> None:
        for exporter in self._exporters:
            try:
                exporter.export(event)
            except Exception as exc:
                self.health.record_error(exporter.name, exc)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        ok = True
        for exporter in self._exporters:
            try:
                ok = exporter.force_flush(timeout_s) and ok
            except Exception as exc:
                self.health.record_error(exporter.name, exc)
                ok = False
        return ok

    def shutdown(self) -> None:
        """Shut every exporter down, even when one is interrupted (Ctrl-C during a metrics
        linger): the others still flush; the interrupt is raised once all are done."""
        interrupt: BaseException | None = None
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception as exc:
                self.health.record_error(exporter.name, exc)
            except BaseException as exc:
                interrupt = interrupt or exc
        if interrupt is not None:
            raise interrupt


__all__ = ["Exporter", "ExporterSet", "TelemetryHealth"]
