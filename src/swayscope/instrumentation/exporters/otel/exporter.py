"""OtelExporter: core events in, OpenTelemetry spans out, through the tracer's public API."""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from swayscope import __version__
from swayscope.instrumentation.events import (
    CacheLookup,
    Event,
    ForwardCall,
    ForwardStarted,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    ViewEntered,
    ViewExited,
    WorkerPoolStarted,
)
from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.exporters.otel import attributes as attr
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.deferred import DeferredSpans
from swayscope.instrumentation.exporters.otel.environment import (
    DEFAULT_EXPORT_TIMEOUT_S,
    BatchSettings,
    batch_settings,
    outer_context,
)
from swayscope.instrumentation.exporters.otel.layout import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_MAX_SPANS_PER_TRACE,
    Frame,
    SpanLayout,
)
from swayscope.instrumentation.exporters.otel.outcome import RunOutcome
from swayscope.instrumentation.exporters.otel.processor import DEFAULT_SHUTDOWN_TIMEOUT_S
from swayscope.instrumentation.exporters.otel.provider import (
    OwnPipeline,
    build_pipeline,
    host_tracer_provider,
    otlp_span_exporter,
)
from swayscope.instrumentation.exporters.otel.remote import RemoteCalls
from swayscope.instrumentation.exporters.otel.sweep import SweepSpan
from swayscope.instrumentation.exporters.otel.workers import call_bounded
from swayscope.instrumentation.settings import OtlpTarget, resolve_otlp_target

log = logging.getLogger(__name__)

#: How long the run-end flush waits for the collector, at most.
DEFAULT_FLUSH_TIMEOUT_S = 1.0

_INTERNAL = SpanKind.INTERNAL


def _shutdown_at_exit(ref: weakref.ref[OtelExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter.shutdown()


class OtelExporter(Exporter):
    """Turns core events into OpenTelemetry spans; fills ``trace_id``/``span_id`` on events.

    Placed before the other exporters (``annotates_trace``) so the JSONL trace and
    Prometheus exemplars point at the spans. See the package docstring for which
    TracerProvider is used, how traces are laid out and how a dead collector is handled.
    """

    name = "otel"
    annotates_trace = True

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
        self._deferred: DeferredSpans | None = None

        if endpoint is not None and target is None:
            target = resolve_otlp_target(
                endpoint, protocol, env,
                endpoint_source="OtelExporter(endpoint=...)",
                protocol_source="OtelExporter(protocol=...)",
            )
        provider = tracer_provider
        if provider is None and span_exporter is None and target is None:
            provider = host_tracer_provider()
        if provider is None:
            if span_exporter is None:
                target = target or resolve_otlp_target(None, protocol, env, default=True)
                assert target is not None
                span_exporter = otlp_span_exporter(target, export_timeout_s, env)
                self.target = target
            settings = (
                batch_settings(
                    env, max_queue_size=max_queue_size, schedule_delay_s=schedule_delay_s
                )
                if batch
                else None
            )
            provider = self._build_own(span_exporter, target, service_name, settings)
        self._provider = provider
        self._tracer = provider.get_tracer(attr.SCOPE_NAME, __version__)
        self._layout = SpanLayout(
            self._tracer,
            outer_context(env),
            max_spans=max_spans_per_trace,
            chunk_s=chunk_seconds,
        )
        self._outcome = RunOutcome()
        self._sweep = SweepSpan()
        self._remote = RemoteCalls(
            self._tracer, self._layout, self._accounting,
            self._pipeline.ids if self._pipeline is not None else None, capture_prompts,
        )
        self._handlers: dict[type, Callable[[Any], None]] = {
            CacheLookup: self._on_lookup, ForwardCall: self._on_forward,
            ForwardStarted: self._remote.start, WorkerPoolStarted: self._remote.pool_started,
            ViewEntered: self._on_view_entered, ViewExited: self._on_view_exited,
            ProbeStarted: self._on_probe_started, ProbeEnded: self._on_probe_ended,
            RunStarted: self._on_run_started, RunEnded: self._on_run_ended,
            SweepStarted: lambda ev: self._sweep.start(self._tracer, ev, self._layout.outer),
            SweepEnded: self._sweep.end,
        }

    def _build_own(
        self,
        span_exporter: SpanExporter,
        target: OtlpTarget | None,
        service_name: str | None,
        settings: BatchSettings | None,
    ) -> trace.TracerProvider:
        """Our own provider; spans made on a worker when batched; shut down at exit."""
        self._pipeline = build_pipeline(
            span_exporter,
            self._accounting,
            target=target,
            service_name=service_name,
            batch=settings,
            shutdown_timeout_s=self.shutdown_timeout_s,
        )
        if settings is not None:
            self._deferred = DeferredSpans(
                self._make_leaf,
                self._pipeline.ids,
                self._accounting,
                max_pending=settings.max_queue_size,
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
        handler = self._handlers.get(type(event))
        if handler is not None and not self._closed:
            handler(event)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver queued spans, waiting at most ``min(timeout_s, flush_timeout_s)``; not at
        all while delivery is failing (the worker drops and counts them instead)."""
        if self._closed:
            return True
        budget = max(0.0, min(timeout_s, self.flush_timeout_s))
        pipeline = self._pipeline
        if pipeline is None:
            return self._flush_host(budget)
        deadline = time.monotonic() + budget
        if self._deferred is not None and not self._deferred.flush(budget):
            return False
        if pipeline.guard.failing:
            return False
        return pipeline.processor.force_flush(int((deadline - time.monotonic()) * 1000))

    def shutdown(self) -> None:
        """End open spans, deliver what is queued (bounded), release the provider we built.

        A host's provider is flushed (bounded) but never shut down.
        """
        if self._closed:
            return
        now_ns = time.time_ns()
        self._remote.close(now_ns)
        self._layout.close_all(now_ns)
        self._sweep.end_at(now_ns)
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        self._closed = True
        pipeline = self._pipeline
        if pipeline is None:
            self._flush_host(self.shutdown_timeout_s)
            return
        deadline = time.monotonic() + self.shutdown_timeout_s
        if self._deferred is not None:
            self._deferred.shutdown(self.shutdown_timeout_s)
        pipeline.holder.release_all()
        pipeline.processor.shutdown(deadline - time.monotonic())
        pipeline.provider.shutdown()

    def _flush_host(self, timeout_s: float) -> bool:
        flush = getattr(self._provider, "force_flush", None)
        if flush is None:
            return True
        return call_bounded(
            lambda: flush(int(timeout_s * 1000)), timeout_s, "swayscope-otel-flush"
        )

    # -- run / probe / view spans ------------------------------------------------------------

    def _on_run_started(self, ev: RunStarted) -> None:
        self._outcome.start(ev.total_probes)
        frame = self._layout.open(
            "run", attr.SPAN_RUN, ev.run_id, ev.start_ns, attr.run_started(ev), ev.run_id,
            links=self._sweep.links(ev),
        )
        ev.trace_id, ev.span_id = frame.trace_hex, frame.span_hex

    def _on_run_ended(self, ev: RunEnded) -> None:
        attrs, failure = self._outcome.run_ended(ev)
        self._layout.close("run", ev.run_id, ev.end_ns, attrs, failure)

    def _on_probe_started(self, ev: ProbeStarted) -> None:
        self._layout.open(
            "probe", attr.SPAN_PROBE, ev.probe, ev.start_ns, attr.probe_started(ev), ev.run_id
        )

    def _on_probe_ended(self, ev: ProbeEnded) -> None:
        failure = self._outcome.probe_ended(ev)
        self._layout.close("probe", ev.probe, ev.end_ns, attr.probe_ended(ev), failure)

    def _on_view_entered(self, ev: ViewEntered) -> None:
        self._layout.open(
            "view", attr.SPAN_VIEW, ev.view_id, ev.start_ns, attr.view_entered(ev), ev.run_id
        )

    def _on_view_exited(self, ev: ViewExited) -> None:
        self._layout.close("view", ev.view_id, ev.end_ns)

    # -- forward calls and cache hits: the hot path ------------------------------------------

    def _on_lookup(self, ev: CacheLookup) -> None:
        if not ev.hit:
            return  # a miss is part of its ForwardCall's span
        frame = self._layout.count_hit(self.hit_spans)
        if self.hit_spans:
            self._leaf(ev, frame)
        elif frame is not None and frame.sampled:
            ev.trace_id = frame.trace_hex
            ev.span_id = frame.span_hex

    def _on_forward(self, ev: ForwardCall) -> None:
        if self._remote.end(ev):
            return
        self._leaf(ev, self._layout.count_forward(ev.cache_misses))

    def _leaf(self, ev: ForwardCall | CacheLookup, frame: Frame | None) -> None:
        """The span of a forward call or hit under ``frame``; the event gets its ids.

        With a provider built here, under a sampled frame, the span is made by the
        deferred worker (its id chosen now); under an unsampled one it is not made
        at all: that provider's sampler (OTEL_TRACES_SAMPLER) is parent-based or
        decides by trace id, so the span would not be sampled either. Directly in
        the run (no probe, no view) it is a trace of its own, linked to the run.
        """
        if frame is not None and frame.kind == "run":
            context, links, root = self._layout.detached(ev.run_id)
            self._annotate(ev, self._make_leaf(ev, context, links, root))
            return
        deferred = self._deferred
        if frame is not None and self._pipeline is not None:
            if not frame.sampled:
                return
            if deferred is not None:
                span_id = deferred.submit(ev, frame.context)
                if span_id is not None:
                    ev.trace_id = frame.trace_hex
                    ev.span_id = format(span_id, "016x")
                    return
        self._annotate(ev, self._make_leaf(ev, frame.context if frame else self._layout.outer))

    @staticmethod
    def _annotate(ev: ForwardCall | CacheLookup, sc: SpanContext) -> None:
        if sc.is_valid and sc.trace_flags.sampled:
            ev.trace_id = format(sc.trace_id, "032x")
            ev.span_id = format(sc.span_id, "016x")

    def _make_leaf(
        self,
        ev: ForwardCall | CacheLookup,
        context: Context | None,
        links: Sequence[Link] = (),
        root: attr.Attributes | None = None,
    ) -> SpanContext:
        """Make the finished span of ``ev`` through the tracer; its span context.

        A failed model call gets status ERROR and an exception event made of the
        core's redacted texts (the exception's own message may quote a prompt).
        """
        if isinstance(ev, ForwardCall):
            name, attrs = attr.SPAN_FORWARD, attr.forward_call(ev, self.capture_prompts)
        else:
            name, attrs = attr.SPAN_CACHE_HIT, attr.cache_hit(ev, self.capture_prompts)
        if root:
            attrs.update(root)
        end_ns = ev.start_ns + int(ev.duration_s * 1e9)
        span = self._tracer.start_span(
            name, context=context, kind=_INTERNAL, start_time=ev.start_ns, attributes=attrs,
            links=links,
        )
        if isinstance(ev, ForwardCall) and ev.error is not None:
            span.set_status(Status(StatusCode.ERROR, ev.error))
            type_name = type(ev.exception).__name__ if ev.exception is not None else None
            span.add_event(
                attr.EXCEPTION_EVENT,
                attr.exception_event(ev.error, ev.error_stack, type_name),
                timestamp=end_ns,
            )
        span.end(end_time=end_ns)
        return span.get_span_context()
