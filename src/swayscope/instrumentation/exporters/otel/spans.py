"""Spans made where the core placed them: parent, links and ids from a :class:`SpanPlace`.

The core chooses every id (:mod:`swayscope.instrumentation.tracing`). With a provider
built here the spans get exactly those ids (the provider's :class:`PresetIds`, the SDK's
public ``IdGenerator`` extension point, hands them over), so the JSONL trace and the
Prometheus exemplars name spans that exist. A host application's provider picks ids of
its own: :class:`SpanMaker` then maps the core's ids of the open spans to the real ones,
so parents and links still hold (the pointers in the JSONL trace and exemplars name the
core's ids, which such a backend does not have).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child
from swayscope.instrumentation.tracing import SpanLink, SpanPlace

_INTERNAL = SpanKind.INTERNAL
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class PresetIds(IdGenerator):
    """The ids the core chose: a thread sets the next span's (and a root's trace) id just
    before starting it; otherwise random, from a generator out of reach of
    ``random.seed`` (a program that seeds it must not make two runs share trace ids)."""

    def __init__(self) -> None:
        self._next = threading.local()
        self._seed()
        restart_in_forked_child(self._seed)

    def _seed(self) -> None:
        self._random = random.Random(os.urandom(32))

    def preset(self, span_id: int, trace_id: int = 0) -> None:
        """The next span this thread starts gets ``span_id`` (and, a root, ``trace_id``)."""
        self._next.span_id = span_id
        self._next.trace_id = trace_id

    def generate_span_id(self) -> int:
        span_id: int = getattr(self._next, "span_id", 0)
        if span_id:
            self._next.span_id = 0
            return span_id
        while not (span_id := self._random.getrandbits(64)):
            pass
        return span_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        while not (trace_id := self._random.getrandbits(128)):
            pass
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


def _context_of(trace_id: str, span_id: str, *, remote: bool, sampled: bool) -> SpanContext:
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=remote,
        trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
    )


class SpanMaker:
    """Starts spans at the core's places through the tracer's public API.

    Keeps the real span context of each span that others are parented on or linked to
    (roots, probes, views) until :meth:`forget`; thread-safe.
    """

    def __init__(self, tracer: trace.Tracer, ids: PresetIds | None) -> None:
        self._tracer = tracer
        self._ids = ids
        self._known: dict[str, SpanContext] = {}
        self._lock = threading.Lock()

    def _real(self, trace_id: str, span_id: str, sampled: bool = True) -> SpanContext:
        with self._lock:
            known = self._known.get(span_id)
        return known or _context_of(trace_id, span_id, remote=False, sampled=sampled)

    def parent_context(self, place: SpanPlace, ambient: bool = False) -> Context | None:
        """The context a span at ``place`` starts in: none for a root (``ambient``: the
        caller's current context, a host application's active span), else its parent."""
        parent = place.parent_span_id
        if parent is None:
            return None if ambient else Context()
        if place.parent_remote:
            sc = _context_of(place.trace_id, parent, remote=True, sampled=place.sampled)
        else:
            sc = self._real(place.trace_id, parent, place.sampled)
        return trace.set_span_in_context(NonRecordingSpan(sc))

    def links(self, links: Sequence[SpanLink]) -> list[Link]:
        return [Link(self._real(k.trace_id, k.span_id), {attr.LINK: k.kind}) for k in links]

    def start(
        self,
        name: str,
        place: SpanPlace,
        start_ns: int,
        attributes: attr.Attributes,
        *,
        remember: bool = False,
        run_id: str | None = None,
        ambient: bool = False,
    ) -> trace.Span:
        """Start the span of ``place`` (a unit's root also carries ``run_id`` and its chunk
        index); ``remember``: others will be parented on it or link to it; ``ambient``: a
        root joins the caller's current context (with a host's provider only: ours keeps
        the core's ids)."""
        if place.chunk is not None:
            attributes = {**attributes, **attr.chunk_root(run_id or "", place.chunk)}
        ids = self._ids
        if ids is not None:
            root = place.parent_span_id is None
            ids.preset(int(place.span_id, 16), int(place.trace_id, 16) if root else 0)
        try:
            span = self._tracer.start_span(
                name, context=self.parent_context(place, ambient and ids is None),
                kind=_INTERNAL, start_time=start_ns,
                attributes=attributes, links=self.links(place.links),
            )
        finally:
            if ids is not None:
                ids.preset(0)
        if remember:
            with self._lock:
                self._known[place.span_id] = span.get_span_context()
        return span

    def start_child(
        self, name: str, parent: trace.Span, span_id: str | None, start_ns: int,
        attributes: attr.Attributes,
    ) -> trace.Span:
        """A span made elsewhere (a worker's part of a call) as a child of ``parent``, with
        its own ``span_id`` where the provider is ours."""
        if self._ids is not None and span_id:
            self._ids.preset(int(span_id, 16))
        try:
            return self._tracer.start_span(
                name, context=trace.set_span_in_context(parent), kind=_INTERNAL,
                start_time=start_ns, attributes=attributes,
            )
        finally:
            if self._ids is not None:
                self._ids.preset(0)

    def forget(self, span_id: str | None) -> None:
        """Nothing will be parented on or link to the span ``span_id`` any more."""
        if span_id is not None:
            with self._lock:
                self._known.pop(span_id, None)


__all__ = ["PresetIds", "SpanMaker"]
