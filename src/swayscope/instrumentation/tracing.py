"""Where each span goes: trace and span ids chosen by the core, bounded traces, links.

The core decides the shape of every trace and the ids in it; a tracing exporter
(OpenTelemetry) only makes the spans it is told about, and the JSONL trace and the
Prometheus exemplars point at the same ids. Nothing here imports a tracing library:
ids are W3C Trace Context ids (32 and 16 hex characters).

Layout
    A run is a trace of its own (a child of the outer trace under ``TRACEPARENT``): a
    short *root* that ends as the run starts, so that the backend holds it from the
    run's first seconds (a killed run still has its run trace), and an *outcome* span,
    its child, that ends with the run and says how it went. A sweep is laid out the
    same way. Each *unit of work* — a probe with its views and model calls, a view
    opened outside any probe, or a model call directly in a run — is a trace of its
    own whose root carries the run id and a chunk index and links to the run's root
    (link kind ``run``); a run's root links to its sweep's root (``sweep``).
Chunks
    When a unit's trace already holds ``max_spans_per_trace`` spans, or has been open
    ``chunk_seconds``, its next span first *rotates* it: the unit's open spans end and
    start again (same names) in a new trace linked to the run and to the previous
    chunk's root (``previous_chunk``). No trace outgrows the bound, and a running
    unit shows within ``chunk_seconds``.
Counts
    Hits, misses and model calls are counted on the innermost open frame; a frame's
    counts include those of the frames inside it once they close.

Not thread-safe by itself: the recorder calls it under its one lock.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.tracecontext import TraceParent, parse_traceparent

#: No trace holds more spans than this, however long the run (documented in the README).
DEFAULT_MAX_SPANS_PER_TRACE = 1000
#: A unit's trace is cut after this many seconds, so a long probe shows while it runs.
DEFAULT_CHUNK_SECONDS = 10.0
#: The fewest spans a chunk may hold: its root, an open view, a model call, with room.
MIN_SPANS_PER_TRACE = 8
#: Spans a pool worker records for its part of a forward call (queue wait, compute).
SPANS_PER_WORKER_PART = 2

FrameKind = Literal["run", "probe", "view"]
LinkKind = Literal["run", "previous_chunk", "sweep", "resumed"]

log = logging.getLogger(__name__)
_UNBOUNDED = sys.maxsize
_TRACE_ID_LOW_SPAN = 1 << 64


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """How traces are laid out; a tracing exporter declares the settings it wants.

    ``outer``: the trace the run joins (from ``TRACEPARENT``); ``hit_spans``: a span
    per cache hit too (not only counts on the enclosing span); ``sample_ratio``: the
    share of new traces sampled, decided on the trace id as OpenTelemetry's
    ``TraceIdRatioBased`` decides (a trace under ``outer`` follows its flag), so that
    events point only at spans that exist.
    """

    max_spans_per_trace: int = DEFAULT_MAX_SPANS_PER_TRACE
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS
    hit_spans: bool = False
    outer: TraceParent | None = None
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise TelemetryConfigError(
                f"sample_ratio={self.sample_ratio} must be between 0 and 1"
            )
        if self.max_spans_per_trace < MIN_SPANS_PER_TRACE or not self.chunk_seconds > 0:
            raise TelemetryConfigError(
                f"max_spans_per_trace={self.max_spans_per_trace} and "
                f"chunk_seconds={self.chunk_seconds} must be at least "
                f"{MIN_SPANS_PER_TRACE} and above 0"
            )

    def sampled(self, trace_id: str) -> bool:
        """Whether a new trace with ``trace_id`` is sampled (its lower 64 bits against the
        ratio's bound)."""
        bound = round(self.sample_ratio * _TRACE_ID_LOW_SPAN)
        return int(trace_id[16:], 16) < bound


def outer_trace(env: Mapping[str, str] | None = None) -> TraceParent | None:
    """The trace a run joins: W3C ``TRACEPARENT`` in ``env`` (default: the process's)."""
    source = os.environ if env is None else env
    header = source.get("TRACEPARENT", "").strip()
    parent = parse_traceparent(header)
    if header and parent is None:
        log.warning(
            "ignoring TRACEPARENT=%r: not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>); "
            "the run starts its own trace",
            header,
        )
    return parent


@dataclass(frozen=True, slots=True)
class SpanLink:
    """A link from a unit's root to another trace's span; ``kind`` says what that span is."""

    trace_id: str
    span_id: str
    kind: LinkKind


@dataclass(frozen=True, slots=True)
class SpanPlace:
    """Where one span goes: its ids, its parent, its links.

    ``parent_span_id`` None: the root of its trace. ``parent_remote``: the parent lives
    in another process or trace context (the outer ``TRACEPARENT``). ``chunk``: set on
    the root of a unit's trace (its chunk index; the root also carries the run id).
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    parent_remote: bool = False
    sampled: bool = True
    links: tuple[SpanLink, ...] = ()
    chunk: int | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """Cache hits, misses and model calls of everything inside a span."""

    hits: int = 0
    misses: int = 0
    calls: int = 0
    disk_hits: int = 0
    """Of ``hits``, those the durable tier served."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One span of a rotated unit: it ended in ``old`` with ``counts`` and goes on in
    ``new`` (the next chunk's trace)."""

    old: SpanPlace
    new: SpanPlace
    counts: Counts


class Ids:
    """Random W3C ids from a generator of our own, seeded from ``os.urandom``: a program
    that seeds ``random`` (dlm-sway does) must not give two runs the same trace ids."""

    def __init__(self) -> None:
        self.reseed()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._random = random.Random(os.urandom(32))

    def trace_id(self) -> str:
        while not (value := self._random.getrandbits(128)):
            pass
        return f"{value:032x}"

    def span_id(self) -> str:
        while not (value := self._random.getrandbits(64)):
            pass
        return f"{value:016x}"


@dataclass(eq=False, slots=True)
class Frame:
    """An open run, probe or view and its span (the current chunk's, for a unit's frames)."""

    kind: FrameKind
    name: str
    run_id: str
    place: SpanPlace | None
    parent: Frame | None
    unit: Unit | None = None
    hits: int = 0
    misses: int = 0
    calls: int = 0
    disk_hits: int = 0

    def counts(self) -> Counts:
        return Counts(self.hits, self.misses, self.calls, self.disk_hits)


@dataclass(eq=False, slots=True)
class Unit:
    """A unit of work in its current chunk: its open frames (outermost first), the run's
    root it links to, how many more spans the chunk takes and until when."""

    run_id: str
    run_root: SpanPlace | None
    frames: list[Frame] = field(default_factory=list)
    chunk: int = 0
    room: int = _UNBOUNDED
    deadline: float = float("inf")


class TraceLayout:
    """Chooses the place of every span from the frames open in the caller's context.

    With ``settings`` None (no tracing exporter) no ids are made: every place is None,
    and only the counts are kept.
    """

    def __init__(self, settings: TraceSettings | None, ids: Ids | None = None) -> None:
        self.settings = settings
        self._ids = ids or Ids()

    @property
    def tracing(self) -> bool:
        return self.settings is not None

    @property
    def hit_spans(self) -> bool:
        return self.settings is not None and self.settings.hit_spans

    def _root(
        self, links: tuple[SpanLink, ...] = (), chunk: int | None = None, outer: bool = False
    ) -> SpanPlace | None:
        settings = self.settings
        if settings is None:
            return None
        parent = settings.outer if outer else None
        if parent is not None:
            return SpanPlace(
                parent.trace_id, self._ids.span_id(), parent.span_id, True, parent.sampled,
                links, chunk,
            )
        trace_id = self._ids.trace_id()
        return SpanPlace(
            trace_id, self._ids.span_id(), None, False, settings.sampled(trace_id), links, chunk
        )

    def _child(self, parent: SpanPlace | None) -> SpanPlace | None:
        if parent is None or self.settings is None:
            return None
        return SpanPlace(
            parent.trace_id, self._ids.span_id(), parent.span_id, False, parent.sampled
        )

    # -- runs and sweeps: a short root and an outcome span -----------------------------------

    def run_root(
        self, sweep_root: SpanPlace | None = None, links: tuple[SpanLink, ...] = ()
    ) -> tuple[SpanPlace | None, SpanPlace | None]:
        """A run's (or a sweep's) root and its outcome span (``sweep_root``: the sweep a
        run is one adapter of; its root links there instead of joining the outer trace;
        ``links``: more, e.g. to the run this one resumes)."""
        if sweep_root is not None:
            links = (SpanLink(sweep_root.trace_id, sweep_root.span_id, "sweep"), *links)
        root = self._root(links, outer=sweep_root is None)
        return root, self._child(root)

    # -- units, their frames and chunks ------------------------------------------------------

    def open(
        self, kind: FrameKind, name: str, run_id: str, parent: Frame | None
    ) -> tuple[Frame, list[Rotation]]:
        """A probe or view opening inside ``parent`` (None: outside any frame): its frame,
        and the rotation of its unit that had to happen first (when its chunk was full)."""
        unit = parent.unit if parent is not None else None
        if unit is None:
            run_root = parent.place if parent is not None and parent.kind == "run" else None
            unit = Unit(run_id, run_root)
            frame = Frame(kind, name, run_id, None, parent, unit)
            frame.place = self._unit_root(unit, ())
            self._start_chunk(unit)
            unit.room -= 1
            unit.frames.append(frame)
            return frame, []
        rotations = self.reserve(unit)
        assert parent is not None
        frame = Frame(kind, name, run_id, self._child(parent.place), parent, unit)
        unit.frames.append(frame)
        return frame, rotations

    def close(self, frame: Frame) -> None:
        """``frame`` ends: its counts go to the frame around it."""
        unit = frame.unit
        if unit is not None and unit.frames and unit.frames[-1] is frame:
            unit.frames.pop()
        outer = frame.parent
        if outer is not None:
            outer.hits += frame.hits
            outer.misses += frame.misses
            outer.calls += frame.calls
            outer.disk_hits += frame.disk_hits

    def leaf(
        self, frame: Frame | None, spans: int = 1
    ) -> tuple[SpanPlace | None, list[Rotation], int]:
        """The place of a model call's (or a hit's) span inside ``frame``; the rotation
        done first; the spans reserved (``spans``: the call's own and its workers', as
        many as half a chunk can give).

        Directly in a run (no unit open) the span is a trace of its own linked to the
        run's root; outside any frame, the root of a trace in the outer context.
        """
        if self.settings is None:
            return None, [], spans
        if frame is None:
            return self._root(outer=True), [], spans
        unit = frame.unit
        if unit is None:
            return self._unit_root(Unit(frame.run_id, frame.place), ()), [], spans
        granted = max(1, min(spans, self.settings.max_spans_per_trace // 2))
        rotations = self.reserve(unit, granted)
        return self._child(frame.place), rotations, granted

    def reserve(self, unit: Unit, n: int = 1) -> list[Rotation]:
        """Count ``n`` more spans in ``unit``, rotating it first when its chunk has no room
        for them or is old."""
        rotations: list[Rotation] = []
        if unit.room < n or time.monotonic() >= unit.deadline:
            rotations = self._rotate(unit)
        unit.room -= n
        return rotations

    def _unit_root(self, unit: Unit, previous: tuple[SpanLink, ...]) -> SpanPlace | None:
        run = unit.run_root
        links = (SpanLink(run.trace_id, run.span_id, "run"),) if run is not None else ()
        return self._root(links + previous, unit.chunk, outer=run is None)

    def _start_chunk(self, unit: Unit) -> None:
        settings = self.settings
        if settings is None:
            return
        unit.room = settings.max_spans_per_trace
        unit.deadline = time.monotonic() + settings.chunk_seconds

    def _rotate(self, unit: Unit) -> list[Rotation]:
        """End the unit's open spans (this chunk) and start them again as the next chunk."""
        if self.settings is None or not unit.frames:
            return []
        inside = Counts()
        ended: list[Counts] = []
        for frame in reversed(unit.frames):
            inside = Counts(
                frame.hits + inside.hits, frame.misses + inside.misses,
                frame.calls + inside.calls, frame.disk_hits + inside.disk_hits,
            )
            ended.append(inside)
        ended.reverse()
        unit.chunk += 1
        old_root = unit.frames[0].place
        previous = (
            (SpanLink(old_root.trace_id, old_root.span_id, "previous_chunk"),)
            if old_root is not None
            else ()
        )
        rotations = []
        parent: SpanPlace | None = None
        for i, frame in enumerate(unit.frames):
            old = frame.place
            new = self._unit_root(unit, previous) if i == 0 else self._child(parent)
            assert old is not None and new is not None
            frame.place = parent = new
            rotations.append(Rotation(old, new, ended[i]))
        self._start_chunk(unit)
        unit.room -= len(unit.frames)
        return rotations


__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_MAX_SPANS_PER_TRACE",
    "MIN_SPANS_PER_TRACE",
    "SPANS_PER_WORKER_PART",
    "Counts",
    "Frame",
    "FrameKind",
    "Ids",
    "LinkKind",
    "Rotation",
    "SpanLink",
    "SpanPlace",
    "TraceLayout",
    "TraceSettings",
    "Unit",
    "outer_trace",
]
