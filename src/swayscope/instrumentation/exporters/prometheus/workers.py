"""The ``swayscope_worker_*`` metrics of a pool of forward workers, labelled by ``worker``
(the worker's index in its pool: bounded by the pool's size), from the worker events the
driver emits with each part of a forward call."""

from __future__ import annotations

from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swayscope.instrumentation.events import (
    Event,
    WorkerCallEnded,
    WorkerFailed,
    WorkerLoad,
    WorkerPoolStarted,
    WorkerStatus,
)
from swayscope.instrumentation.exporters.prometheus import metrics as m

_M = TypeVar("_M", Counter, Gauge, Histogram)


class Adder(Protocol):
    """Keeps a metric the exporter made (to unregister it at shutdown) and hands it back."""

    def __call__(self, metric: _M, /) -> _M: ...


#: The events these metrics are made from.
WORKER_EVENTS: tuple[type, ...] = (
    WorkerCallEnded, WorkerLoad, WorkerFailed, WorkerStatus, WorkerPoolStarted,
)


class WorkerMetrics:
    """The per-worker metrics, registered in ``registry`` through ``add`` (which keeps
    them for unregistering); a worker's series appear when its pool starts."""

    def __init__(self, registry: CollectorRegistry, add: Adder) -> None:
        r, labels = registry, m.WORKER_LABELS
        self.up = add(Gauge(m.WORKER_UP, m.HELP[m.WORKER_UP], labels, registry=r))
        self.in_flight = add(
            Gauge(m.WORKER_IN_FLIGHT, m.HELP[m.WORKER_IN_FLIGHT], labels, registry=r)
        )
        self.duration = add(Histogram(
            m.WORKER_FORWARD_DURATION, m.HELP[m.WORKER_FORWARD_DURATION], labels,
            buckets=m.FORWARD_DURATION_BUCKETS, registry=r,
        ))
        self.queue = add(Histogram(
            m.WORKER_QUEUE_WAIT, m.HELP[m.WORKER_QUEUE_WAIT], labels,
            buckets=m.FORWARD_DURATION_BUCKETS, registry=r,
        ))
        self.batch = add(Histogram(
            m.WORKER_BATCH_SIZE, m.HELP[m.WORKER_BATCH_SIZE], labels,
            buckets=m.BATCH_SIZE_BUCKETS, registry=r,
        ))
        self.busy = add(
            Counter(m.WORKER_BUSY, m.HELP[m.WORKER_BUSY], labels, unit="seconds", registry=r)
        )
        self.tokens = add(Counter(m.WORKER_TOKENS, m.HELP[m.WORKER_TOKENS], labels, registry=r))
        self.memory = add(
            Gauge(m.WORKER_MEMORY, m.HELP[m.WORKER_MEMORY], labels, unit="bytes", registry=r)
        )
        self.device_memory = add(Gauge(
            m.WORKER_DEVICE_MEMORY, m.HELP[m.WORKER_DEVICE_MEMORY], labels, unit="bytes",
            registry=r,
        ))
        self.failures = add(
            Counter(m.WORKER_FAILURES, m.HELP[m.WORKER_FAILURES], labels, registry=r)
        )

    def export(self, event: Event) -> None:
        """Update the metrics from one of :data:`WORKER_EVENTS`."""
        if isinstance(event, WorkerCallEnded):
            self._on_call(event)
        elif isinstance(event, WorkerLoad):
            self.in_flight.labels(event.worker).set(event.in_flight)
        elif isinstance(event, WorkerFailed):
            self.failures.labels(event.worker).inc()
        elif isinstance(event, WorkerStatus):
            self.up.labels(event.worker).set(1 if event.up else 0)
        elif isinstance(event, WorkerPoolStarted):
            self._on_pool_started(event)

    def _on_pool_started(self, ev: WorkerPoolStarted) -> None:
        """Every worker's series exist from the start, at 0, so increase() sees the first."""
        for worker in ev.workers:
            for metric in (
                self.in_flight, self.duration, self.queue, self.batch, self.busy,
                self.tokens, self.memory, self.device_memory, self.failures,
            ):
                metric.labels(worker)
            self.up.labels(worker).set(1)

    def _on_call(self, ev: WorkerCallEnded) -> None:
        worker = ev.worker
        exemplar = (
            {"trace_id": ev.trace_id, "span_id": ev.span_id}
            if ev.trace_id and ev.span_id
            else None
        )
        self.duration.labels(worker).observe(ev.duration_s, exemplar)
        self.queue.labels(worker).observe(ev.queue_s)
        self.batch.labels(worker).observe(ev.batch_size)
        self.busy.labels(worker).inc(ev.duration_s)
        self.tokens.labels(worker).inc(ev.n_tokens)
        self.memory.labels(worker).set(ev.memory_bytes)
        self.device_memory.labels(worker).set(ev.device_memory_bytes)


__all__ = ["WORKER_EVENTS", "Adder", "WorkerMetrics"]
