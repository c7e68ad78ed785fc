"""OtelExporter: core events in, OpenTelemetry spans out, where the core placed them."""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SpanExporter

from swayscope import __version__
from swayscope.instrumentation.events import CacheLookup, Event, ForwardCall
from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.environment import (
    DEFAULT_EXPORT_TIMEOUT_S,
    BatchSettings,
    batch_settings,
    sample_ratio,
)
from swayscope.instrumentation.exporters.otel.handoff import Handoff
from swayscope.instrumentation.exporters.otel.processor import DEFAULT_SHUTDOWN_TIMEOUT_S
from swayscope.instrumentation.exporters.otel.provider import (
    OwnPipeline,
    build_pipeline,
    host_tracer_provider,
    otlp_span_exporter,
)
from swayscope.instrumentation.exporters.otel.spans import SpanMaker
from swayscope.instrumentation.exporters.otel.workers import call_bounded
from swayscope.instrumentation.exporters.otel.writer import SpanWriter
from swayscope.instrumentation.settings import OtlpTarget, resolve_otlp_target
from swayscope.instrumentation.tracing import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_MAX_SPANS_PER_TRACE,
    TraceSettings,
    outer_trace,
)

#: How long the run-end flush waits for the collector, at most.
DEFAULT_FLUSH_TIMEOUT_S = 1.0
#: Events whose span nothing else depends on: dropped (and counted) when the queue is full.
_LEAVES: frozenset[type] = frozenset({ForwardCall, CacheLookup})


def _shutdown_at_exit(ref: weakref.ref[OtelExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter.shutdown()


class OtelExporter(Exporter):
    """Makes the spans the core places (see the package docstring): declares its trace
    settings, so the core lays traces out and puts the ids on every event.

    The TracerProvider: ``tracer_provider`` as given; else, without an ``endpoint`` or
    ``span_exporter``, a host application's global one; else one built here.
    """

    name = "otel"

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        protocol: str | None = None,
        target: OtlpTarget | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        span_exporter: SpanExporter | None = None,
        service_name: str | None = None,
        hit_spans: bool = False,
        capture_prompts: bool = False,
        batch: bool = True,
        max_queue_size: int | None = None,
        schedule_delay_s: float | None = None,
        export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S,
        flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        max_spans_per_trace: int = DEFAULT_MAX_SPANS_PER_TRACE,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.hit_spans = hit_spans
        self.capture_prompts = capture_prompts
        self.flush_timeout_s = flush_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.target: OtlpTarget | None = None
        self._accounting = SpanAccounting()
        self._closed = False
        self._atexit: Callable[[], None] | None = None
        self._pipeline: OwnPipeline | None = None
        self._handoff: Handoff | None = None

        if endpoint is not None and target is None:
            target = resolve_otlp_target(
                endpoint, protocol, env,
                endpoint_source="OtelExporter(endpoint=...)",
                protocol_source="OtelExporter(protocol=...)",
            )
        provider = tracer_provider
        if provider is None and span_exporter is None and target is None:
            provider = host_tracer_provider()
        ratio = 1.0
        if provider is None:
            if span_exporter is None:
                target = target or resolve_otlp_target(None, protocol, env, default=True)
                assert target is not None
                span_exporter = otlp_span_exporter(target, export_timeout_s, env)
                self.target = target
            ratio = sample_ratio(env)
            settings = (
                batch_settings(
                    env, max_queue_size=max_queue_size, schedule_delay_s=schedule_delay_s
                )
                if batch
                else None
            )
            provider = self._build_own(span_exporter, target, service_name, settings, ratio)
        self.trace_settings = TraceSettings(
            max_spans_per_trace=max_spans_per_trace,
            chunk_seconds=chunk_seconds,
            hit_spans=hit_spans,
            outer=outer_trace(env),
            sample_ratio=ratio,
        )
        self._provider = provider
        tracer = provider.get_tracer(attr.SCOPE_NAME, __version__)
        self._writer = SpanWriter(
            SpanMaker(tracer, self._pipeline.ids if self._pipeline else None), capture_prompts,
            self._deliver_now,
        )
        if self._pipeline is not None and batch:
            # Ours, batched: spans are made on a worker (a host's provider and the synchronous
            # test pipeline make them where the event happens).
            queue = batch_settings(
                env, max_queue_size=max_queue_size, schedule_delay_s=schedule_delay_s
            ).max_queue_size
            self._handoff = Handoff(self._writer.write, self._accounting, queue)

    def _build_own(
        self,
        span_exporter: SpanExporter,
        target: OtlpTarget | None,
        service_name: str | None,
        settings: BatchSettings | None,
        ratio: float,
    ) -> trace.TracerProvider:
        """Our own provider, shut down at exit."""
        self._pipeline = build_pipeline(
            span_exporter,
            self._accounting,
            target=target,
            service_name=service_name,
            batch=settings,
            shutdown_timeout_s=self.shutdown_timeout_s,
            sample_ratio=ratio,
        )
        ref = weakref.ref(self)
        self._atexit = lambda: _shutdown_at_exit(ref)
        atexit.register(self._atexit)
        return self._pipeline.provider

    # -- Exporter interface --------------------------------------------------------------

    def bind(self, health: TelemetryHealth) -> None:
        super().bind(health)
        self._accounting.bind(health)

    @property
    def owns_provider(self) -> bool:
        """True when the TracerProvider was built here (not the host's)."""
        return self._pipeline is not None

    @property
    def tracer_provider(self) -> trace.TracerProvider:
        return self._provider

    @property
    def spans_dropped(self) -> int:
        """Spans made here that were not delivered (also counted in the bound health)."""
        return self._accounting.dropped_total

    @property
    def spans_delivered(self) -> int:
        """Spans made here that the span exporter accepted."""
        return self._accounting.delivered_total

    def export(self, event: Event) -> None:
        if self._closed or not self._writer.makes_spans_of(event):
            return
        if type(event) is CacheLookup and event.place is None:
            return  # a hit without a span of its own: counted by the core on its frame
        if self._handoff is not None:
            self._handoff.put(event, type(event) in _LEAVES)
        else:
            self._writer.write(event)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver queued spans, waiting at most ``min(timeout_s, flush_timeout_s)``; not at
        all while delivery is failing (the worker drops and counts them instead)."""
        if self._closed:
            return True
        budget = max(0.0, min(timeout_s, self.flush_timeout_s))
        deadline = time.monotonic() + budget
        if self._handoff is not None and not self._handoff.drain(budget):
            return False
        pipeline = self._pipeline
        if pipeline is None:
            return self._flush_host(budget)
        if pipeline.guard.failing:
            return False
        return pipeline.processor.force_flush(int(max(0.0, deadline - time.monotonic()) * 1000))

    def shutdown(self) -> None:
        """End open spans, deliver what is queued (bounded), release the provider we built.

        A host's provider is flushed (bounded) but never shut down.
        """
        if self._closed:
            return
        start = time.monotonic()
        if self._handoff is not None:
            self._handoff.close(self.shutdown_timeout_s)
        self._writer.end_open(time.time_ns())
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        self._closed = True
        pipeline = self._pipeline
        if pipeline is None:
            self._flush_host(self.shutdown_timeout_s)
            return
        deadline = start + self.shutdown_timeout_s
        pipeline.holder.release_all()
        pipeline.processor.shutdown(deadline - time.monotonic())
        pipeline.provider.shutdown()

    def _deliver_now(self) -> None:
        """Wake delivery without waiting for it (a run's root should not wait for the
        next scheduled export)."""
        pipeline = self._pipeline
        if pipeline is not None and not pipeline.guard.failing:
            pipeline.processor.force_flush(0)

    def _flush_host(self, timeout_s: float) -> bool:
        flush = getattr(self._provider, "force_flush", None)
        if flush is None:
            return True
        return call_bounded(
            lambda: flush(int(timeout_s * 1000)), timeout_s, "swayscope-otel-flush"
        )


__all__ = ["DEFAULT_FLUSH_TIMEOUT_S", "OtelExporter"]
