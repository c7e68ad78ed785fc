"""Spans are made off the thread that runs the model: events go through a bounded queue
to one worker that hands them, in order, to the span writer.

Making a span through the SDK's public API costs tens of µs of Python (attribute checks,
the sampler, span objects); on the calling thread that alone would break the budget of a
forward call with every exporter on (40 µs, measured in docs/benchmarks.md). The core has
chosen every id already, so nothing the calling thread needs waits for the worker. Order
is kept (one worker, one queue). Bounded: past ``max_pending`` events a model call's or a
hit's is not queued and its span is counted dropped (``queue_full``); the events that
open and end runs, probes and views always are (they are few, and a trace needs them).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from swayscope.instrumentation.events import Event
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.workers import restart_in_forked_child


class Handoff:
    """One worker thread running ``handle`` on each event put, in order."""

    def __init__(
        self, handle: Callable[[Event], None], accounting: SpanAccounting, max_pending: int
    ) -> None:
        self._handle = handle
        self._accounting = accounting
        self._max_pending = max_pending
        self._start()
        restart_in_forked_child(self._start)

    def _start(self) -> None:
        """Start empty, with a worker (here, and in a forked child)."""
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="swayscope-otel", daemon=True)
        self._worker.start()

    def put(self, event: Event, droppable: bool) -> None:
        with self._cond:
            if self._closed or (droppable and len(self._queue) >= self._max_pending):
                full = not self._closed
            else:
                self._queue.append(event)
                self._cond.notify()
                return
        self._accounting.dropped(1, "queue_full" if full else "shutdown")

    def drain(self, timeout_s: float) -> bool:
        """Wait until every event put so far is handled; False when ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self._worker.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float) -> None:
        """Handle what is queued (at most ``timeout_s``), then stop; what is left is counted
        dropped."""
        self.drain(timeout_s)
        with self._cond:
            self._closed = True
            left, self._queue = len(self._queue), deque()
            self._cond.notify_all()
        self._accounting.dropped(left, "shutdown")

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
                self._busy = True
            try:
                self._handle(event)
            except Exception as exc:  # a span the tracer failed to make: counted, not fatal
                self._accounting.dropped(1, "make_failed", exc)
            finally:
                with self._cond:
                    self._busy = False
                    if not self._queue:
                        self._cond.notify_all()


__all__ = ["Handoff"]
