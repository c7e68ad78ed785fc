"""Leaf spans (forward calls, cache hits) made on a worker thread, their ids chosen up front.

Making a span through the SDK's tracer costs 22 to 29 µs of Python (attribute
checks, sampler, span objects; see docs/benchmarks.md); a model call is one. The
thread that runs the model only records what the span will be: its parent
context, its event, a span id. The worker makes it with
``tracer.start_span(start_time=...)`` / ``span.end(end_time=...)`` while that
thread is back in the model (which releases the GIL). The span id is chosen when
the event happens, so the JSONL trace and the Prometheus exemplars can name the
span at once; the provider's :class:`PresetSpanIds` (the SDK's public
``IdGenerator`` extension point) hands it to the SDK when the worker makes the
span. Its ids come from a generator of its own, seeded from ``os.urandom`` (and
again in a forked child): the SDK's default draws from the ``random`` module, so
a program that seeds it (dlm-sway does) would give two runs the same trace ids,
and a backend would merge their traces.

Bounded: with ``max_pending`` spans waiting, :meth:`DeferredSpans.submit` refuses
and the caller makes the span itself. Every span submitted is made (and then
accounted for by the span processor), or counted dropped: ``shutdown`` when it
was still waiting when shutdown gave up, ``make_failed`` when the tracer raised.
"""

from __future__ import annotations

import os
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator

from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child

#: Makes one span for ``event`` under ``context`` through the tracer.
MakeSpan = Callable[[Any, Context], object]


class PresetSpanIds(IdGenerator):
    """Random ids, except that a thread may fix the id of the next span it starts."""

    def __init__(self) -> None:
        self._next = threading.local()
        self._seed()
        restart_in_forked_child(self._seed)

    def _seed(self) -> None:
        """Our own generator, out of reach of ``random.seed`` (a child reseeds its own)."""
        self._random = random.Random(os.urandom(32))

    def preset(self, span_id: int) -> None:
        """The next span this thread starts gets ``span_id``."""
        self._next.span_id = span_id

    def random_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_span_id(self) -> int:
        span_id: int = getattr(self._next, "span_id", 0)
        if span_id:
            self._next.span_id = 0
            return span_id
        return self.random_span_id()

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


class _Stop:
    """Queued by shutdown: the worker stops when it gets here."""


_Item = tuple[Any, Context, int] | threading.Event | _Stop


class DeferredSpans:
    """A bounded FIFO of spans to make and the worker thread that makes them.

    Flush and shutdown queue a marker behind the spans submitted so far, so the
    worker reaches it once they are all made.
    """

    def __init__(
        self,
        make: MakeSpan,
        ids: PresetSpanIds,
        accounting: SpanAccounting,
        *,
        max_pending: int,
    ) -> None:
        self._make = make
        self._ids = ids
        self._accounting = accounting
        self._max_pending = max_pending
        self._closed = False
        self._start()
        restart_in_forked_child(self._start)

    def _start(self) -> None:
        """Start empty, with a new worker: here, and in a forked child (whose parent
        makes what it had queued)."""
        if self._closed:
            return
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        # Guards the pending count and the flags: a span is pending until the worker
        # takes it, which it then always makes, so a shutdown that gives up counts
        # exactly the spans still pending.
        self._lock = threading.Lock()
        self._pending = 0
        self._given_up = False
        self._worker = threading.Thread(
            target=self._work, name="swayscope-otel-span-maker", daemon=True
        )
        self._worker.start()

    def submit(self, event: Any, context: Context) -> int | None:
        """Queue a span for ``event`` under ``context``: its span id, or None when the
        queue is full or closed (make the span now instead)."""
        span_id = self._ids.random_span_id()
        with self._lock:
            if self._closed or self._pending >= self._max_pending:
                return None
            self._pending += 1
            self._queue.put((event, context, span_id))
        return span_id

    def flush(self, timeout_s: float) -> bool:
        """Make every span submitted so far; False when that took longer than ``timeout_s``."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(max(0.0, timeout_s))

    def shutdown(self, timeout_s: float) -> None:
        """Make what is pending (at most ``timeout_s``), count the rest dropped; stop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Stop())
        self._worker.join(max(0.0, timeout_s))
        if self._worker.is_alive():
            with self._lock:
                dropped, self._pending = self._pending, 0
                self._given_up = True
            self._accounting.dropped(dropped, "shutdown")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            with self._lock:
                if self._given_up:
                    return
                self._pending -= 1
            self._make_one(*item)

    def _make_one(self, event: Any, context: Context, span_id: int) -> None:
        self._ids.preset(span_id)
        try:
            self._make(event, context)
        except Exception as exc:
            self._accounting.dropped(1, "make_failed", exc)
        finally:
            self._ids.preset(0)
