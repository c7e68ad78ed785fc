"""Root first: a trace's spans go on to delivery only once its local root has ended.

A span processor sees a span when it ends, and a root ends after everything
inside it. A plain batch processor therefore delivers children long before their
root: mid-run the backend shows rootless spans, and a process killed mid-run
leaves them orphaned for good. :class:`RootFirstSpanProcessor` holds each sampled
span until the *local root* of its trace (a span without a parent, or whose
parent is remote) has ended, then hands the root and the spans held for it to
the inner processor, root first. A span of a trace whose root already went on
(a forward span made late by the deferred worker) goes on at once. A SIGKILL
then loses the held spans with their root: the backend never gets one without
the other.

The exporter keeps every trace it makes small (:mod:`.layout`), so little is
held: one unit of work, at most ``max_spans_per_trace`` spans. Bounded anyway:
past ``max_held`` spans the trace held longest goes on without its root (a host
application's long trace, say). Held spans are never lost quietly: ``shutdown``
hands on what is still held (the exporter ends its open spans first, so none of
its own are left) before shutting the inner processor down, where they are
delivered or counted.

Public for host applications: ``provider.add_span_processor(
RootFirstSpanProcessor(BatchSpanProcessor(exporter)))`` gives a host's provider
the same delivery order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child

#: Spans held at most, over all traces waiting for their roots.
DEFAULT_MAX_HELD = 16384
#: Trace ids remembered after their root went on (for late spans of those traces).
RELEASED_REMEMBERED = 4096


def is_local_root(span: ReadableSpan) -> bool:
    """No parent, or a parent in another process: the root of this process's part of a trace."""
    parent = span.parent
    return parent is None or parent.is_remote


class RootFirstSpanProcessor(SpanProcessor):
    """Holds each trace's spans until its local root ends; then root first, in end order."""

    def __init__(self, inner: SpanProcessor, *, max_held: int = DEFAULT_MAX_HELD) -> None:
        self._inner = inner
        self._max_held = max_held
        self._start()
        restart_in_forked_child(self._start)

    def _start(self) -> None:
        """Start empty: here, and in a forked child (whose parent hands on what it held)."""
        # Also held while handing spans on, so a late span of a released trace can never
        # overtake its root on the way to the inner processor.
        self._lock = threading.Lock()
        self._held: dict[int, list[ReadableSpan]] = {}
        self._n_held = 0
        self._released: OrderedDict[int, None] = OrderedDict()

    @property
    def inner(self) -> SpanProcessor:
        return self._inner

    @property
    def held(self) -> int:
        """Spans waiting for their root."""
        with self._lock:
            return self._n_held

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        # Hot (once per span): attributes read once, no list made unless a trace is new.
        # Unsampled spans are held like the others; the inner processor ignores them.
        context = span.context
        if context is None:
            self._inner.on_end(span)
            return
        trace_id = context.trace_id
        parent = span.parent
        with self._lock:
            if parent is None or parent.is_remote:  # a local root
                self._release(trace_id, span)
            elif trace_id in self._released:
                self._inner.on_end(span)
            else:
                held = self._held.get(trace_id)
                if held is None:
                    held = self._held[trace_id] = []
                held.append(span)
                self._n_held += 1
                if self._n_held > self._max_held:
                    self._release(next(iter(self._held)), None)

    def _release(self, trace_id: int, root: ReadableSpan | None) -> None:
        """Hand ``root`` and the spans held for its trace on; remember the trace as released."""
        spans = self._held.pop(trace_id, [])
        self._n_held -= len(spans)
        released = self._released
        released[trace_id] = None
        if len(released) > RELEASED_REMEMBERED:
            released.popitem(last=False)
        if root is not None:
            self._inner.on_end(root)
        for span in spans:
            self._inner.on_end(span)

    def release_all(self) -> None:
        """Hand on every span still held, trace by trace (at shutdown)."""
        with self._lock:
            for trace_id in list(self._held):
                self._release(trace_id, None)

    def shutdown(self) -> None:
        self.release_all()
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner processor; held spans wait for their roots."""
        return self._inner.force_flush(timeout_millis)
