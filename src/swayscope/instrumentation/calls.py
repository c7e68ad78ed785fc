"""The forward call whose compute is running: what a compute that runs elsewhere needs of it.

A backend whose compute sends the call to other processes (a pool of workers)
passes ``propagate=True`` to ``cached``/``cached_batch``. The core then places the
call's span before computing it, announces it (a ``ForwardStarted`` event) and,
while the compute runs, offers the call's :class:`CallContext` on that thread
(``BackendInstrumentation.current_call``): its batch id and W3C ``traceparent`` go
out with the work; the workers' spans and what happened on the way (a lost worker,
a retry) come back into it and are put on the call's ``ForwardCall`` event.
Computes that do not propagate cost nothing more.
"""

from __future__ import annotations

import threading

from swayscope.instrumentation.events import CallEvent, RemoteSpan
from swayscope.instrumentation.tracecontext import TraceParent
from swayscope.instrumentation.tracing import SpanPlace


class CallContext:
    """One forward call while it is computed.

    ``traceparent`` is set when traces are laid out (a tracing exporter is attached) and
    the call's trace is sampled; without one, remote parts record no spans. ``room``: how
    many of the workers' spans the call's trace can take (the rest are counted dropped).
    """

    __slots__ = ("_lock", "batch_id", "events", "place", "room", "spans", "traceparent")

    def __init__(
        self,
        batch_id: str,
        traceparent: TraceParent | None = None,
        *,
        place: SpanPlace | None = None,
        room: int = 0,
    ) -> None:
        self.batch_id = batch_id
        self.traceparent = traceparent
        self.place = place
        self.room = room
        self.spans: list[RemoteSpan] = []
        self.events: list[CallEvent] = []
        self._lock = threading.Lock()

    def add_span(self, span: RemoteSpan) -> None:
        """A span a worker recorded for its part of this call."""
        with self._lock:
            self.spans.append(span)

    def add_event(self, event: CallEvent) -> None:
        """Something that happened during this call (an event on its span)."""
        with self._lock:
            self.events.append(event)


class CurrentCall(threading.local):
    """The call whose compute runs on this thread (None outside a propagating compute)."""

    call: CallContext | None = None


__all__ = ["CallContext", "CurrentCall"]
