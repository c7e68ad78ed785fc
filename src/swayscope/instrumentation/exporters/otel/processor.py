"""Span processors that account for every span: delivered, or counted as dropped.

Built on the SDK's public ``SpanProcessor`` and ``SpanExporter`` interfaces. Each
sampled span that ends is either delivered (the exporter returned ``SUCCESS``)
or counted dropped in a :class:`SpanAccounting`, with its reason:

- ``queue_full``: the bounded queue held ``max_queue_size`` spans (and then every
  later span of a trace whose root it refused, so the collector never gets a
  trace without its root);
- ``export_failed``: the exporter returned ``FAILURE`` or raised;
- ``shutdown``: still queued (or in an export that never returned) when shutdown
  gave up after ``shutdown_timeout_s``, or ended after shutdown.

:class:`CountingBatchSpanProcessor` delivers from a worker thread, so the thread
that ends a span only appends it to a queue; :class:`CountingSimpleSpanProcessor`
delivers in the thread that ends the span (tests, debugging).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from swayscope.instrumentation.exporters.otel.accounting import DropReason, SpanAccounting
from swayscope.instrumentation.exporters.otel.environment import BatchSettings
from swayscope.instrumentation.exporters.otel.holding import is_local_root
from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child

DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0
#: Traces remembered whose root a full queue refused.
_REFUSED_ROOTS_REMEMBERED = 1024


def _sampled(span: ReadableSpan) -> bool:
    context = span.context
    return context is not None and context.trace_flags.sampled


class _CountingProcessor(SpanProcessor):
    """What both processors share: the exporter, the accounting, the closed state."""

    def __init__(self, exporter: SpanExporter, accounting: SpanAccounting) -> None:
        self._exporter = exporter
        self._accounting = accounting
        self._closed = False

    @property
    def accounting(self) -> SpanAccounting:
        return self._accounting

    def _export(self, batch: Sequence[ReadableSpan]) -> tuple[bool, BaseException | None]:
        """(delivered, the exporter's exception if it raised)."""
        try:
            return self._exporter.export(batch) is SpanExportResult.SUCCESS, None
        except Exception as exc:
            return False, exc

    def _count(self, n: int, delivered: bool, error: BaseException | None) -> None:
        if delivered:
            self._accounting.delivered(n)
        else:
            self._accounting.dropped(n, "export_failed", error)


class CountingSimpleSpanProcessor(_CountingProcessor):
    """Exports each span as it ends, in the ending thread."""

    def on_end(self, span: ReadableSpan) -> None:
        if not _sampled(span):
            return
        if self._closed:
            self._accounting.dropped(1, "shutdown")
            return
        delivered, error = self._export((span,))
        self._count(1, delivered, error)

    def shutdown(self, timeout_s: float | None = None) -> None:
        self._closed = True
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingBatchSpanProcessor(_CountingProcessor):
    """A bounded queue and one worker thread that exports it in batches.

    The worker wakes every ``schedule_delay_s``, when a batch is full, on
    ``force_flush`` and on ``shutdown``, and exports everything queued.
    ``shutdown`` waits for that at most ``shutdown_timeout_s``.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        accounting: SpanAccounting,
        settings: BatchSettings,
        *,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    ) -> None:
        super().__init__(exporter, accounting)
        self._settings = settings
        self._shutdown_timeout_s = shutdown_timeout_s
        self._start()
        restart_in_forked_child(self._start)

    def _start(self) -> None:
        """Start empty, with a new worker: here, and in a forked child (whose parent
        delivers and counts what it had queued)."""
        if self._closed:
            return
        # Guards the queue, the in-flight count and the give-up flag, so no span is
        # ever in none of: queue, in flight, delivered, dropped.
        self._lock = threading.Lock()
        self._queue: deque[ReadableSpan] = deque()
        self._in_flight = 0
        self._given_up = False
        self._rootless: OrderedDict[int, None] = OrderedDict()
        self._wake = threading.Event()
        self._flushes = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._stopping = False
        self._worker = threading.Thread(
            target=self._work, name="swayscope-otel-spans", daemon=True
        )
        self._worker.start()

    def on_end(self, span: ReadableSpan) -> None:
        if not _sampled(span):
            return
        reason: DropReason
        with self._lock:
            queue = self._queue
            rootless = self._rootless
            trace_id = span.context.trace_id if span.context is not None else 0
            if self._closed:
                reason = "shutdown"
            elif len(queue) >= self._settings.max_queue_size or trace_id in rootless:
                reason = "queue_full"
                if is_local_root(span):
                    rootless[trace_id] = None
                    if len(rootless) > _REFUSED_ROOTS_REMEMBERED:
                        rootless.popitem(last=False)
            else:
                queue.append(span)
                # Wake the worker as the queue reaches a batch (it drains all there is): not
                # on every span past it, which a trace handed on whole would do 500 times.
                if len(queue) == self._settings.max_export_batch_size:
                    self._wake.set()
                return
        self._accounting.dropped(1, reason)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now; False when that took longer than the timeout."""
        if self._closed:
            return True
        with self._flushes:
            self._flush_requested += 1
            target = self._flush_requested
        self._wake.set()
        with self._flushes:
            return self._flushes.wait_for(
                lambda: self._flush_done >= target, max(0.0, timeout_millis / 1000)
            )

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is queued (at most ``timeout_s``, default ``shutdown_timeout_s``),
        then count the rest dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._flushes:
            self._stopping = True
        self._wake.set()
        self._worker.join(max(0.0, self._shutdown_timeout_s if timeout_s is None else timeout_s))
        if self._worker.is_alive():
            self._give_up()
        self._exporter.shutdown()

    # -- the worker ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            self._wake.wait(self._settings.schedule_delay_s)
            self._wake.clear()
            with self._flushes:
                target = self._flush_requested
                stopping = self._stopping
            while batch := self._take_batch():
                self._deliver(batch)
            with self._flushes:
                self._flush_done = max(self._flush_done, target)
                self._flushes.notify_all()
            if stopping or self._given_up:
                return

    def _take_batch(self) -> list[ReadableSpan]:
        with self._lock:
            if self._given_up:
                return []
            queue = self._queue
            n = min(len(queue), self._settings.max_export_batch_size)
            batch = [queue.popleft() for _ in range(n)]
            self._in_flight = n
        return batch

    def _deliver(self, batch: list[ReadableSpan]) -> None:
        delivered, error = self._export(batch)
        with self._lock:
            if self._given_up:  # shutdown already counted this batch as dropped
                return
            self._in_flight = 0
        self._count(len(batch), delivered, error)

    def _give_up(self) -> None:
        """Shutdown timed out: count what is queued and in flight as dropped, stop the worker."""
        with self._lock:
            n = len(self._queue) + self._in_flight
            self._queue.clear()
            self._in_flight = 0
            self._given_up = True
        self._accounting.dropped(n, "shutdown")
