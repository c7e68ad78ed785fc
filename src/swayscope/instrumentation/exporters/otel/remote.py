"""Forward calls computed in other processes (a pool of workers): the call's span starts
when the call is announced (``ForwardStarted``), so its ids travel with the work as its W3C
``traceparent``; it ends with the call's ``ForwardCall``, which brings the spans the
workers recorded under it (made its children here, with the workers' span ids) and what
happened on the way (a lost worker: an event on the call's span)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from swayscope.instrumentation.events import (
    ForwardCall,
    ForwardStarted,
    RemoteSpan,
    WorkerPoolStarted,
)
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.deferred import PresetSpanIds
from swayscope.instrumentation.exporters.otel.layout import SpanLayout

#: Spans a worker records for its part of a forward call (queue wait, compute).
SPANS_PER_WORKER_PART = 2
#: Forward calls announced whose ForwardCall may still come; the core always sends it, so
#: more than this means a lost event: the oldest span is then ended.
MAX_OPEN_CALLS = 1024

_INTERNAL = SpanKind.INTERNAL


class RemoteCalls:
    """The open spans of forward calls computed elsewhere, by batch id.

    Args:
        tracer: makes the spans.
        layout: which trace a call's span goes in; room for its workers' spans.
        accounting: counts the workers' spans that found no room (``trace_full``).
        ids: the provider's span-id generator when it is ours (the workers' ids are kept);
            None for a host's provider (the spans get ids of its choosing).
        capture_prompts: put prompt text on the call's span (the user opted in).
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        layout: SpanLayout,
        accounting: SpanAccounting,
        ids: PresetSpanIds | None,
        capture_prompts: bool,
    ) -> None:
        self._tracer = tracer
        self._layout = layout
        self._accounting = accounting
        self._ids = ids
        self._capture_prompts = capture_prompts
        self._open: OrderedDict[str, tuple[trace.Span, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool_size = 0

    def pool_started(self, ev: WorkerPoolStarted) -> None:
        self._pool_size = len(ev.workers)

    def start(self, ev: ForwardStarted) -> None:
        """Start the call's span and put its ids on ``ev`` (they travel with the call); make
        room in its trace for the workers' spans: two per worker the call can reach, and
        one retried part."""
        parts = min(ev.batch_size, self._pool_size) + 1 if self._pool_size else 0
        frame, granted = self._layout.count_remote_forward(
            ev.batch_size, 1 + SPANS_PER_WORKER_PART * parts
        )
        links: Sequence[Link] = ()
        attrs = attr.forward_started(ev)
        context: Context | None
        if frame is not None and frame.kind == "run":
            context, links, root = self._layout.detached(ev.run_id)
            attrs.update(root)
        elif frame is not None:
            if not frame.sampled:
                return
            context = frame.context
        else:
            context = self._layout.outer
        span = self._tracer.start_span(
            attr.SPAN_FORWARD, context=context, kind=_INTERNAL, start_time=ev.start_ns,
            attributes=attrs, links=links,
        )
        sc = span.get_span_context()
        if not (sc.is_valid and sc.trace_flags.sampled):
            span.end(end_time=ev.start_ns)
            return
        ev.trace_id = format(sc.trace_id, "032x")
        ev.span_id = format(sc.span_id, "016x")
        with self._lock:
            self._open[ev.batch_id] = (span, granted - 1)
            stale = self._open.popitem(last=False) if len(self._open) > MAX_OPEN_CALLS else None
        if stale is not None:
            stale[1][0].end()

    def end(self, ev: ForwardCall) -> bool:
        """End the span of ``ev`` when it was started here (False: not a remote call): its
        final attributes, what happened during it (events), its workers' spans as its
        children (as many as its trace has room for; the rest counted dropped), its status."""
        with self._lock:
            opened = self._open.pop(ev.batch_id, None)
        if opened is None:
            return False
        span, room = opened
        end_ns = ev.start_ns + int(ev.duration_s * 1e9)
        span.set_attributes(attr.forward_call(ev, self._capture_prompts))
        for note in ev.call_events:
            span.add_event(note.name, dict(note.attributes), timestamp=note.time_ns)
        if ev.error is not None:
            span.set_status(Status(StatusCode.ERROR, ev.error))
            type_name = type(ev.exception).__name__ if ev.exception is not None else None
            span.add_event(
                attr.EXCEPTION_EVENT,
                attr.exception_event(ev.error, ev.error_stack, type_name),
                timestamp=end_ns,
            )
        context = trace.set_span_in_context(span)
        kept = ev.remote_spans[:room]
        for remote in kept:
            self._make(remote, context)
        self._accounting.dropped(len(ev.remote_spans) - len(kept), "trace_full")
        span.end(end_time=end_ns)
        return True

    def _make(self, remote: RemoteSpan, context: Context) -> None:
        """A span a worker recorded, as a child of its call's span, with the worker's span
        id when the provider is ours."""
        if self._ids is not None:
            self._ids.preset(int(remote.span_id, 16))
        try:
            span = self._tracer.start_span(
                remote.name, context=context, kind=_INTERNAL, start_time=remote.start_ns,
                attributes=dict(remote.attributes),
            )
        finally:
            if self._ids is not None:
                self._ids.preset(0)
        if remote.error is not None:
            span.set_status(Status(StatusCode.ERROR, remote.error))
        span.end(end_time=remote.end_ns)

    def close(self, now_ns: int) -> None:
        """End the spans of calls still open (the run was cut short)."""
        with self._lock:
            open_calls = list(self._open.values())
            self._open.clear()
        for span, _room in open_calls:
            span.end(end_time=now_ns)


__all__ = ["MAX_OPEN_CALLS", "SPANS_PER_WORKER_PART", "RemoteCalls"]
