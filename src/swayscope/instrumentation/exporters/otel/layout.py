"""Which trace each span goes in: the run's own, and small linked traces for the work.

The run span (``swayscope.run``) is a trace of its own (a child of the outer trace
under ``TRACEPARENT``). Each *unit of work* is a trace of its own: a probe with
its views and model calls, a view opened outside any probe, or a model call
outside any view. Its root carries ``swayscope.run_id`` and
``swayscope.chunk.index`` and links to the run span (a span link, attribute
``swayscope.link=run``), so a search by run id, or by probe, finds every trace of
a run.

A unit is cut into *chunks*: when its trace already holds ``max_spans`` spans, or
has been open ``chunk_s`` seconds, its next span first rotates it. The unit's
open spans (the probe and the view inside it) end there, and start again, same
names and attributes, in a new trace whose root links to the run span and to the
previous chunk's root (``swayscope.link=previous_chunk``), with the next
``swayscope.chunk.index``. So no trace ever holds more than ``max_spans`` spans,
and a running unit's spans reach the backend (root first, :mod:`.holding`) at
most ``chunk_s`` seconds, plus one model call, after they were made.

Cache hits, misses and model calls are counted on the innermost open span, and a
span's counts include those of the spans inside it. On a chunked probe or view
they are counted from the probe's (view's) start, so its last chunk has the totals;
the run span counts everything.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, Status, StatusCode

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child

FrameKind = Literal["run", "probe", "view"]

#: No trace holds more spans than this, however long the run (documented in the README).
DEFAULT_MAX_SPANS_PER_TRACE = 1000
#: A unit's trace is cut after this many seconds, so a long probe shows while it runs.
DEFAULT_CHUNK_SECONDS = 10.0
#: The fewest spans a chunk may hold: its root, an open view, a model call, with room.
MIN_SPANS_PER_TRACE = 8

_INTERNAL = trace.SpanKind.INTERNAL
_monotonic = time.monotonic
_UNBOUNDED = sys.maxsize


class Frame:
    """One open run/probe/view span and the cache counts of everything inside it."""

    __slots__ = (
        "attrs", "calls", "context", "hits", "kind", "misses", "name", "sampled", "span",
        "span_hex", "span_name", "trace_hex",
    )

    def __init__(
        self,
        kind: FrameKind,
        name: str,
        span_name: str,
        attrs: attr.Attributes,
        span: trace.Span,
        parent: Context | None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.span_name = span_name
        #: The attributes it started with (a new chunk starts it again with them).
        self.attrs = attrs
        self.span = span
        #: The context a child span is started in.
        self.context = trace.set_span_in_context(span, parent)
        sc = span.get_span_context()
        self.sampled: bool = sc.is_valid and sc.trace_flags.sampled
        self.trace_hex = format(sc.trace_id, "032x") if self.sampled else None
        self.span_hex = format(sc.span_id, "016x") if self.sampled else None
        self.hits = 0
        self.misses = 0
        self.calls = 0


@dataclass(frozen=True, slots=True)
class Failure:
    """What an ending span reports about an error: status description, exception events
    (their attributes and times, ns)."""

    description: str
    exceptions: tuple[tuple[attr.Attributes, int], ...] = ()


def end_span(
    frame: Frame,
    end_ns: int,
    counts: tuple[int, int, int] | None = None,
    attrs: attr.Attributes | None = None,
    failure: Failure | None = None,
) -> None:
    """End ``frame``'s span with its counts (or ``counts``: hits, misses, calls)."""
    span = frame.span
    hits, misses, calls = counts or (frame.hits, frame.misses, frame.calls)
    span.set_attributes(attr.rolled_up_counts(hits, misses, calls))
    if attrs:
        span.set_attributes(attrs)
    if failure is not None:
        span.set_status(Status(StatusCode.ERROR, failure.description))
        for exception, at_ns in failure.exceptions:
            span.add_event(attr.EXCEPTION_EVENT, exception, timestamp=at_ns)
    span.end(end_time=end_ns)


@dataclass(slots=True)
class _Unit:
    """The unit of work now open: its frames start at ``first``; its current chunk."""

    first: int
    run_id: str
    chunk: int
    root: SpanContext


class SpanLayout:
    """The open frames, innermost last, and the unit and chunk they belong to.

    Thread-safe: one lock guards the frames, the counts and the rotation of chunks
    (which starts and ends spans: rare, one rotation per ``max_spans`` spans).
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        outer: Context | None,
        *,
        max_spans: int = DEFAULT_MAX_SPANS_PER_TRACE,
        chunk_s: float = DEFAULT_CHUNK_SECONDS,
    ) -> None:
        if max_spans < MIN_SPANS_PER_TRACE or not chunk_s > 0:
            raise TelemetryConfigError(
                f"OtelExporter: max_spans_per_trace={max_spans} and chunk_seconds={chunk_s} "
                f"must be at least {MIN_SPANS_PER_TRACE} and above 0"
            )
        self._tracer = tracer
        self._outer = outer
        self._max_spans = max_spans
        self._chunk_s = chunk_s
        self._lock = threading.Lock()
        restart_in_forked_child(self._new_lock)
        self._frames: list[Frame] = []
        self._unit: _Unit | None = None
        # The open chunk: how many more spans it takes, and until when (monotonic). Kept
        # here, not on the unit, so the hot path reads two attributes; unbounded outside a
        # unit.
        self._room = _UNBOUNDED
        self._deadline = float("inf")

    def _new_lock(self) -> None:
        """In a forked child: a thread of the parent may have held the lock at the fork."""
        self._lock = threading.Lock()

    @property
    def outer(self) -> Context | None:
        """The outer (TRACEPARENT) context the run span starts in, if any."""
        return self._outer

    # -- opening and closing -----------------------------------------------------------------

    def open(
        self,
        kind: FrameKind,
        span_name: str,
        name: str,
        start_ns: int,
        attrs: attr.Attributes,
        run_id: str,
        links: Sequence[Link] = (),
    ) -> Frame:
        """Start a run, probe or view span where it belongs and push it (``links``: the
        run span's, e.g. to its sweep)."""
        with self._lock:
            frames = self._frames
            if kind == "run" and not frames:
                frame = self._start(kind, span_name, name, start_ns, attrs, self._outer, links)
            elif self._unit is None:
                frame = self._start_unit(kind, span_name, name, start_ns, attrs, run_id)
            else:
                self._reserve()
                parent = frames[-1].context
                frame = self._start(kind, span_name, name, start_ns, attrs, parent, ())
            frames.append(frame)
            return frame

    def close(
        self,
        kind: FrameKind,
        name: str | None,
        end_ns: int,
        attrs: attr.Attributes | None = None,
        failure: Failure | None = None,
    ) -> bool:
        """End the innermost open ``kind`` span (named ``name`` unless None), and first any
        left open inside it; False when there is none."""
        with self._lock:
            frames = self._frames
            for i in range(len(frames) - 1, -1, -1):
                if frames[i].kind == kind and (name is None or frames[i].name == name):
                    break
            else:
                return False
            popped = self._pop(i)
            for frame in reversed(popped[1:]):
                end_span(frame, end_ns)
            end_span(popped[0], end_ns, None, attrs, failure)
            return True

    def close_all(self, end_ns: int) -> None:
        """End every open span, innermost first (at shutdown)."""
        with self._lock:
            for frame in reversed(self._pop(0)):
                end_span(frame, end_ns)

    def _pop(self, i: int) -> list[Frame]:
        """Remove frames ``i:``; roll their counts outwards, so each counts what is inside."""
        frames = self._frames
        popped = frames[i:]
        if not popped:
            return []
        del frames[i:]
        outer = frames[-1] if frames else None
        for inner, parent in zip(reversed(popped), [*reversed(popped[:-1]), outer], strict=True):
            if parent is not None:
                parent.hits += inner.hits
                parent.misses += inner.misses
                parent.calls += inner.calls
        if self._unit is not None and i <= self._unit.first:
            self._unit = None
            self._room, self._deadline = _UNBOUNDED, float("inf")
        return popped

    # -- model calls and cache hits --------------------------------------------------------

    def count_hit(self, makes_span: bool) -> Frame | None:
        """Count one cache hit on the innermost frame (room for its span, when it gets
        one); that frame, or None outside any."""
        with self._lock:
            if makes_span:
                self._reserve()
            if not self._frames:
                return None
            frame = self._frames[-1]
            frame.hits += 1
            return frame

    def count_forward(self, misses: int) -> Frame | None:
        """Count one model call and its misses on the innermost frame, making room for its
        span; that frame, or None outside any."""
        with self._lock:
            self._reserve()
            if not self._frames:
                return None
            frame = self._frames[-1]
            frame.misses += misses
            frame.calls += 1
            return frame

    def count_remote_forward(self, misses: int, spans: int) -> tuple[Frame | None, int]:
        """:meth:`count_forward` for a call computed elsewhere, whose span gets up to
        ``spans - 1`` children from other processes, all in the call's trace: room for as
        many of them as a chunk can give (at most half a chunk). That frame, and the spans
        reserved (the call's own included)."""
        with self._lock:
            granted = max(1, min(spans, self._max_spans // 2))
            self._reserve(granted)
            if not self._frames:
                return None, granted
            frame = self._frames[-1]
            frame.misses += misses
            frame.calls += 1
            return frame, granted

    def detached(self, run_id: str) -> tuple[Context, Sequence[Link], attr.Attributes]:
        """Where a span made directly in the run (outside any unit) goes: a new trace,
        linked to the run. (context, links, root attributes)."""
        with self._lock:
            return Context(), self._run_links(), attr.chunk_root(run_id, 0)

    # -- units and chunks (under the lock) ---------------------------------------------------

    def _start(
        self,
        kind: FrameKind,
        span_name: str,
        name: str,
        start_ns: int,
        attrs: attr.Attributes,
        parent: Context | None,
        links: Sequence[Link],
    ) -> Frame:
        span = self._tracer.start_span(
            span_name, context=parent, kind=_INTERNAL, start_time=start_ns, attributes=attrs,
            links=links,
        )
        return Frame(kind, name, span_name, attrs, span, parent)

    def _run_links(self, *previous: SpanContext) -> list[Link]:
        frames = self._frames
        links = []
        if frames and frames[0].kind == "run":
            run = frames[0].span.get_span_context()
            if run.is_valid:
                links.append(Link(run, {attr.LINK: attr.LINK_RUN}))
        links.extend(Link(sc, {attr.LINK: attr.LINK_PREVIOUS_CHUNK}) for sc in previous)
        return links

    def _unit_parent(self) -> Context | None:
        """A unit inside a run starts a new trace; without a run, it is the outermost span,
        in the outer (TRACEPARENT) context if any, as before."""
        frames = self._frames
        return Context() if frames and frames[0].kind == "run" else self._outer

    def _start_unit(
        self,
        kind: FrameKind,
        span_name: str,
        name: str,
        start_ns: int,
        attrs: attr.Attributes,
        run_id: str,
    ) -> Frame:
        root_attrs = {**attrs, **attr.chunk_root(run_id, 0)}
        frame = self._start(
            kind, span_name, name, start_ns, root_attrs, self._unit_parent(), self._run_links()
        )
        frame.attrs = attrs
        self._unit = _Unit(
            first=len(self._frames), run_id=run_id, chunk=0, root=frame.span.get_span_context()
        )
        self._room = self._max_spans - 1
        self._deadline = _monotonic() + self._chunk_s
        return frame

    def _reserve(self, n: int = 1) -> None:
        """Count ``n`` more spans in the open unit, rotating it first when its chunk has no
        room for them or is old (never outside a unit: room and time are unbounded there)."""
        if self._room < n or _monotonic() >= self._deadline:
            self._rotate()
        self._room -= n

    def _rotate(self) -> None:
        """End the unit's open spans (this chunk) and start them again as the next chunk."""
        unit = self._unit
        if unit is None:
            return
        frames = self._frames
        old = frames[unit.first :]
        now_ns = time.time_ns()
        inside = (0, 0, 0)
        for frame in reversed(old):
            inside = (frame.hits + inside[0], frame.misses + inside[1], frame.calls + inside[2])
            end_span(frame, now_ns, inside)
        unit.chunk += 1
        parent = self._unit_parent()
        links = self._run_links(unit.root)
        new: list[Frame] = []
        for frame in old:
            if new:
                attrs, parent, links = frame.attrs, new[-1].context, []
            else:
                attrs = {**frame.attrs, **attr.chunk_root(unit.run_id, unit.chunk)}
            started = self._start(
                frame.kind, frame.span_name, frame.name, now_ns, attrs, parent, links
            )
            started.attrs = frame.attrs
            started.hits, started.misses, started.calls = frame.hits, frame.misses, frame.calls
            new.append(started)
        frames[unit.first :] = new
        unit.root = new[0].span.get_span_context()
        self._room = self._max_spans - len(new)
        self._deadline = _monotonic() + self._chunk_s
