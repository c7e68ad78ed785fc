"""The sweep's span: a trace of its own, which each adapter's run span links to.

A checkpoint sweep runs one suite per adapter; each run is its own trace (as any run
is), and its root links to the open ``swayscope.sweep`` span (link attribute
``swayscope.link=sweep``), so the sweep's trace leads to every adapter's run.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from swayscope.instrumentation.events import RunStarted, SweepEnded, SweepStarted
from swayscope.instrumentation.exporters.otel import attributes as attr


class SweepSpan:
    """The open sweep's span (at most one), kept apart from the run/probe/view stack."""

    def __init__(self) -> None:
        self._span: trace.Span | None = None

    def start(self, tracer: trace.Tracer, ev: SweepStarted, root: Context | None) -> None:
        """Start the sweep span in ``root`` (the outer context); the event gets its ids."""
        self.end_at(ev.start_ns)
        span = tracer.start_span(
            attr.SPAN_SWEEP, context=root, kind=SpanKind.INTERNAL, start_time=ev.start_ns,
            attributes=attr.sweep_started(ev),
        )
        self._span = span
        sc = span.get_span_context()
        if sc.is_valid and sc.trace_flags.sampled:
            ev.trace_id, ev.span_id = format(sc.trace_id, "032x"), format(sc.span_id, "016x")

    def links(self, ev: RunStarted) -> tuple[Link, ...]:
        """The run's link to the sweep's span, when the run is one of the sweep's."""
        if self._span is None or ev.sweep_id is None:
            return ()
        return (Link(self._span.get_span_context(), {attr.LINK: attr.LINK_SWEEP}),)

    def end(self, ev: SweepEnded) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attributes(attr.sweep_ended(ev))
        if ev.status == "error":
            span.set_status(Status(StatusCode.ERROR, "sweep error"))
        span.end(end_time=ev.end_ns)

    def end_at(self, end_ns: int) -> None:
        """End a sweep span left open (shutdown, or a new sweep started)."""
        span, self._span = self._span, None
        if span is not None:
            span.end(end_time=end_ns)


__all__ = ["SweepSpan"]
