"""Core events in, spans out: each span where the core placed it (:mod:`.spans`).

Runs and sweeps: a short root at the start, an outcome span at the end. Probes and
views: open spans, ended and started again when the core rotates their unit into its
next chunk. Forward calls and (with ``hit_spans``) hits: finished spans; a call computed
by a pool of workers starts at ``ForwardStarted`` and takes the workers' spans as
children when its ``ForwardCall`` arrives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from swayscope.instrumentation.events import (
    CacheLookup,
    Event,
    ForwardCall,
    ForwardStarted,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    TraceRotated,
    ViewEntered,
    ViewExited,
)
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.spans import SpanMaker
from swayscope.instrumentation.tracing import Counts, SpanPlace

#: Errored probes whose exception events a run's outcome span repeats (its count is whole).
RUN_PROBE_EXCEPTIONS_KEPT = 10
#: Forward calls announced whose ForwardCall may still come; the core always sends it, so
#: more than this means a lost event: the oldest span is then ended.
MAX_OPEN_CALLS = 1024


def _fail(span: trace.Span, error: str | None, stack: str | None, at_ns: int,
          type_name: str | None = None) -> None:
    """Status ERROR and an exception event made of the core's redacted texts (never an
    exception's own message, which may quote a prompt)."""
    description = error or "error"
    span.set_status(Status(StatusCode.ERROR, description))
    span.add_event(
        attr.EXCEPTION_EVENT, attr.exception_event(description, stack, type_name),
        timestamp=at_ns,
    )


class _Open:
    """An open probe or view span and what a new chunk starts it again with."""

    __slots__ = ("attrs", "name", "run_id", "span")

    def __init__(self, name: str, span: trace.Span, attrs: attr.Attributes, run_id: str) -> None:
        self.name, self.span, self.attrs, self.run_id = name, span, attrs, run_id


class SpanWriter:
    """Makes the spans of the events it is handed; thread-safe."""

    def __init__(
        self, maker: SpanMaker, capture_prompts: bool, deliver_now: Callable[[], None]
    ) -> None:
        self._maker = maker
        self.capture_prompts = capture_prompts
        self._deliver_now = deliver_now
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._calls: OrderedDict[str, trace.Span] = OrderedDict()
        self._run_exceptions: dict[str, list[tuple[attr.Attributes, int]]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            CacheLookup: self._on_lookup, ForwardCall: self._on_forward,
            ForwardStarted: self._on_forward_started, TraceRotated: self._on_rotated,
            ViewEntered: self._on_view_entered, ViewExited: self._on_view_exited,
            ProbeStarted: self._on_probe_started, ProbeEnded: self._on_probe_ended,
            RunStarted: self._on_run_started, RunEnded: self._on_run_ended,
            SweepStarted: self._on_sweep_started, SweepEnded: self._on_sweep_ended,
        }

    def makes_spans_of(self, event: Event) -> bool:
        """Whether ``event`` is of a kind that makes or ends spans."""
        return type(event) in self._handlers

    def write(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def end_open(self, end_ns: int) -> None:
        """End every span still open (at shutdown: the run was cut short)."""
        with self._lock:
            open_spans = [o.span for o in self._open.values()]
            open_spans += list(self._calls.values())
            self._open.clear()
            self._calls.clear()
        for span in reversed(open_spans):
            span.end(end_time=end_ns)

    # -- sweeps and runs: a root at the start, an outcome at the end -------------------------

    def _root(self, name: str, place: SpanPlace | None, start_ns: int,
              attrs: attr.Attributes) -> None:
        """A short root: it ends as the work starts and goes out at once, so the backend
        holds the work's trace from its first seconds (and after a SIGKILL)."""
        if place is not None and place.sampled:
            span = self._maker.start(name, place, start_ns, attrs, remember=True, ambient=True)
            span.end(end_time=start_ns)
            self._deliver_now()

    def _on_sweep_started(self, ev: SweepStarted) -> None:
        self._root(attr.SPAN_SWEEP, ev.place, ev.start_ns, attr.sweep_started(ev))

    def _on_sweep_ended(self, ev: SweepEnded) -> None:
        place = ev.place
        if place is None or not place.sampled:
            return
        span = self._maker.start(attr.SPAN_SWEEP_OUTCOME, place, ev.start_ns, attr.sweep_ended(ev))
        if ev.status == "error":
            span.set_status(Status(StatusCode.ERROR, "sweep error"))
        span.end(end_time=ev.end_ns)
        self._maker.forget(place.parent_span_id)

    def _on_run_started(self, ev: RunStarted) -> None:
        with self._lock:
            self._run_exceptions[ev.run_id] = []
        self._root(attr.SPAN_RUN, ev.place, ev.start_ns, attr.run_started(ev))

    def _on_run_ended(self, ev: RunEnded) -> None:
        with self._lock:
            exceptions = self._run_exceptions.pop(ev.run_id, [])
        place = ev.place
        if place is None or not place.sampled:
            return
        span = self._maker.start(attr.SPAN_RUN_OUTCOME, place, ev.start_ns, attr.run_ended(ev))
        reasons = []
        if ev.status == "error":
            reasons.append(ev.error or "run error")
            exceptions.insert(
                0, (attr.exception_event(ev.error or "run error", ev.error_stack), ev.end_ns)
            )
        if ev.probes_errored:
            reasons.append(attr.probes_errored(ev.probes_errored, ev.probes_done))
        if reasons:
            span.set_status(Status(StatusCode.ERROR, "; ".join(reasons)))
            for exception, at_ns in exceptions:
                span.add_event(attr.EXCEPTION_EVENT, exception, timestamp=at_ns)
        span.end(end_time=ev.end_ns)
        self._maker.forget(place.parent_span_id)

    # -- probes and views: open spans, cut into chunks -----------------------------------------

    def _open_span(self, name: str, place: SpanPlace | None, start_ns: int,
                   attrs: attr.Attributes, run_id: str) -> None:
        if place is None or not place.sampled:
            return
        span = self._maker.start(name, place, start_ns, attrs, remember=True, run_id=run_id)
        with self._lock:
            self._open[place.span_id] = _Open(name, span, attrs, run_id)

    def _close_span(self, place: SpanPlace | None, end_ns: int, counts: Counts,
                    attrs: attr.Attributes | None = None) -> trace.Span | None:
        """End the open span of ``place`` with its counts (and ``attrs``); None when it was
        not made here."""
        if place is None:
            return None
        with self._lock:
            opened = self._open.pop(place.span_id, None)
        if opened is None:
            return None
        self._maker.forget(place.span_id)
        span = opened.span
        span.set_attributes(attr.rolled_up_counts(counts))
        if attrs:
            span.set_attributes(attrs)
        return span

    def _on_probe_started(self, ev: ProbeStarted) -> None:
        self._open_span(attr.SPAN_PROBE, ev.place, ev.start_ns, attr.probe_started(ev), ev.run_id)

    def _on_probe_ended(self, ev: ProbeEnded) -> None:
        if ev.status == "error":
            exception = attr.exception_event(ev.error or "probe error", ev.error_stack)
            with self._lock:
                kept = self._run_exceptions.get(ev.run_id)
                if kept is not None and len(kept) < RUN_PROBE_EXCEPTIONS_KEPT:
                    kept.append(({**exception, attr.PROBE: ev.probe}, ev.end_ns))
        span = self._close_span(ev.place, ev.end_ns, ev.counts, attr.probe_ended(ev))
        if span is None:
            return
        if ev.status == "error":
            _fail(span, ev.error or "probe error", ev.error_stack, ev.end_ns)
        span.end(end_time=ev.end_ns)

    def _on_view_entered(self, ev: ViewEntered) -> None:
        self._open_span(attr.SPAN_VIEW, ev.place, ev.start_ns, attr.view_entered(ev), ev.run_id)

    def _on_view_exited(self, ev: ViewExited) -> None:
        span = self._close_span(ev.place, ev.end_ns, ev.counts)
        if span is not None:
            span.end(end_time=ev.end_ns)

    def _on_rotated(self, ev: TraceRotated) -> None:
        """A unit's chunk is full: its open spans end, innermost first, and start again in
        the next chunk's trace, outermost first."""
        reopen: list[tuple[SpanPlace, _Open]] = []
        for rotation in reversed(ev.rotations):
            with self._lock:
                opened = self._open.get(rotation.old.span_id)
            span = self._close_span(rotation.old, ev.at_ns, rotation.counts)
            if span is not None and opened is not None:
                span.end(end_time=ev.at_ns)
                reopen.append((rotation.new, opened))
        for place, opened in reversed(reopen):
            self._open_span(opened.name, place, ev.at_ns, opened.attrs, opened.run_id)

    # -- forward calls and cache hits ----------------------------------------------------------

    def _on_lookup(self, ev: CacheLookup) -> None:
        place = ev.place
        if place is None or not place.sampled:
            return
        self._maker.start(
            attr.SPAN_CACHE_HIT, place, ev.start_ns, attr.cache_hit(ev, self.capture_prompts),
            run_id=ev.run_id,
        ).end(end_time=ev.start_ns + int(ev.duration_s * 1e9))

    def _on_forward_started(self, ev: ForwardStarted) -> None:
        """A call computed elsewhere: its span starts now (the workers' spans join it)."""
        place = ev.place
        if place is None or not place.sampled:
            return
        span = self._maker.start(
            attr.SPAN_FORWARD, place, ev.start_ns, attr.forward_started(ev), run_id=ev.run_id
        )
        with self._lock:
            self._calls[ev.batch_id] = span
            stale = self._calls.popitem(last=False) if len(self._calls) > MAX_OPEN_CALLS else None
        if stale is not None:
            stale[1].end()

    def _on_forward(self, ev: ForwardCall) -> None:
        place = ev.place
        if place is None or not place.sampled:
            return
        with self._lock:
            span = self._calls.pop(ev.batch_id, None)
        attrs = attr.forward_call(ev, self.capture_prompts)
        if span is None:
            span = self._maker.start(attr.SPAN_FORWARD, place, ev.start_ns, attrs, run_id=ev.run_id)
        else:
            span.set_attributes(attrs)
        end_ns = ev.start_ns + int(ev.duration_s * 1e9)
        for note in ev.call_events:
            span.add_event(note.name, dict(note.attributes), timestamp=note.time_ns)
        if ev.error is not None:
            type_name = type(ev.exception).__name__ if ev.exception is not None else None
            _fail(span, ev.error, ev.error_stack, end_ns, type_name)
        for remote in ev.remote_spans:
            child = self._maker.start_child(
                remote.name, span, remote.span_id, remote.start_ns, dict(remote.attributes)
            )
            if remote.error is not None:
                child.set_status(Status(StatusCode.ERROR, remote.error))
            child.end(end_time=remote.end_ns)
        span.end(end_time=end_ns)


__all__ = ["MAX_OPEN_CALLS", "RUN_PROBE_EXCEPTIONS_KEPT", "SpanWriter"]
