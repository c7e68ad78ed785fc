"""OpenTelemetry exporter: a span tree per run, one span per model call.

``swayscope.run`` → ``swayscope.probe`` → ``swayscope.view`` → ``swayscope.forward``,
all of kind INTERNAL. A forward span carries the real start and end of its model
call (a batch is one span). Cache hits are counted on the enclosing span
(``swayscope.cache.hits``, cumulative: a probe's count includes its views'); with
``hit_spans=True`` each hit also gets a ``swayscope.cache_hit`` span.

Which TracerProvider
    ``tracer_provider=`` is used as given. Otherwise, without an explicit
    ``endpoint``/``span_exporter``, a TracerProvider the host application
    installed globally is used as is. Otherwise this exporter builds its own
    (not installed globally): resource from ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES``, sampler from ``OTEL_TRACES_SAMPLER``, a batch
    processor (``OTEL_BSP_*`` honoured), an OTLP exporter whose endpoint and
    protocol come from the arguments or ``OTEL_EXPORTER_OTLP_*``.
    ``TRACEPARENT`` (W3C) makes the run span a child of an outer trace.

A slow or dead collector never slows the run
    Spans leave through a background thread. The delivering exporter is wrapped:
    every span it could not deliver (collector down, timeout, queue full) is
    counted in ``TelemetryHealth.spans_dropped``. Until a first delivery
    succeeds, and again after a failure, a 0.25 s TCP connect to the endpoint
    comes first, so a closed port fails in a millisecond instead of the SDK's
    seconds of retries; after a failure batches are dropped at once for a
    back-off period (5 s, doubling to 60 s). ``force_flush`` at run end waits at
    most ``flush_timeout_s`` (1 s) and not at all while delivery is failing;
    ``shutdown`` (and the atexit hook) at most ``shutdown_timeout_s`` (5 s), then
    counts what is still queued as dropped.

Hot path
    With its own provider, forward (and hit) spans are handed to the batch
    processor as finished ``ReadableSpan`` records, bypassing the SDK's
    ``start_span``/``end`` machinery (about 35 µs → 4 µs per span here). They
    follow their parent's sampling decision, which the SDK sampler made for the
    run/probe/view spans (every standard sampler is parent-based or decides by
    trace id, so the outcome is the same). A host provider gets the regular API.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import socket
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from swayscope import __version__
from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.events import (
    CacheLookup,
    Event,
    ForwardCall,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    ViewEntered,
    ViewExited,
)
from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.settings import OtlpTarget, resolve_otlp_target

log = logging.getLogger(__name__)

SCOPE_NAME = "swayscope"
SPAN_RUN = "swayscope.run"
SPAN_PROBE = "swayscope.probe"
SPAN_VIEW = "swayscope.view"
SPAN_FORWARD = "swayscope.forward"
SPAN_CACHE_HIT = "swayscope.cache_hit"

_INTERNAL = SpanKind.INTERNAL
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_randbits = random.getrandbits

#: Defaults of the batch processor built here (each overridden by its OTEL_BSP_* variable).
DEFAULT_MAX_QUEUE_SIZE = 8192
DEFAULT_SCHEDULE_DELAY_S = 1.0
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
#: Per OTLP request (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT overrides); the SDK default is 10 s.
DEFAULT_EXPORT_TIMEOUT_S = 3.0


def host_tracer_provider() -> trace.TracerProvider | None:
    """The TracerProvider the host application installed globally, or None."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def _call_bounded(fn: Callable[[], object], timeout_s: float, name: str) -> tuple[bool, object]:
    """Run ``fn`` in a daemon thread; wait at most ``timeout_s``. (finished, result)."""
    box: list[object] = []

    def target() -> None:
        try:
            box.append(fn())
        except Exception as exc:
            log.debug("%s failed: %s", name, exc)
            box.append(False)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    return (not thread.is_alive(), box[0] if box else None)


def _check_listening(addr: tuple[str, int], timeout_s: float = 0.25) -> None:
    """Raise OSError unless a TCP connection to ``addr`` opens within ``timeout_s``."""
    with socket.create_connection(addr, timeout=timeout_s):
        pass


def _endpoint_addr(target: OtlpTarget) -> tuple[str, int] | None:
    parts = urlsplit(target.endpoint)
    if parts.hostname is None:
        return None
    default = 4317 if target.protocol == "grpc" else (443 if parts.scheme == "https" else 80)
    return parts.hostname, parts.port or default


class _DropCounter:
    """Counts undeliverable spans into the bound TelemetryHealth (buffered until bound)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: TelemetryHealth | None = None
        self._pending = 0
        self.total = 0

    def bind(self, health: TelemetryHealth) -> None:
        with self._lock:
            self._health = health
            pending, self._pending = self._pending, 0
        if pending:
            health.record_spans_dropped(pending)

    def add(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self.total += n
            health = self._health
            if health is None:
                self._pending += n
        if health is not None:
            health.record_spans_dropped(n)


class _GuardedSpanExporter(SpanExporter):
    """Wraps the delivering exporter: counts what it could not deliver and, after a
    failure, drops batches at once for a back-off period (5 s doubling to 60 s) so a
    dead collector costs no time at all, in the worker or in a flush."""

    def __init__(
        self,
        inner: SpanExporter,
        drops: _DropCounter,
        *,
        probe_addr: tuple[str, int] | None = None,
        backoff_s: float = 5.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self._inner = inner
        self._drops = drops
        self._probe_addr = probe_addr
        self._healthy = False
        self._base_backoff = self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._open_until = 0.0
        self._busy_since: float | None = None
        self._aborted = False
        self._inner_shut = False
        self._warned = False
        self.delivered = 0
        self.failed_exports = 0

    @property
    def inner(self) -> SpanExporter:
        return self._inner

    @property
    def failing(self) -> bool:
        """Delivery is known to fail, or one export has been stuck for a while."""
        now = time.monotonic()
        busy = self._busy_since
        return now < self._open_until or (busy is not None and now - busy > 0.25)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        if self._aborted or time.monotonic() < self._open_until:
            self._drops.add(n)
            return SpanExportResult.FAILURE
        self._busy_since = time.monotonic()
        error: BaseException | None = None
        try:
            if not self._healthy and self._probe_addr is not None:
                # Until a delivery succeeds, check that something listens before handing
                # the batch to the SDK exporter, whose retries would take seconds.
                _check_listening(self._probe_addr)
            result = self._inner.export(spans)
        except Exception as exc:
            error, result = exc, SpanExportResult.FAILURE
        finally:
            self._busy_since = None
        if result is SpanExportResult.SUCCESS:
            self._healthy = True
            self._backoff = self._base_backoff
            self.delivered += n
            return result
        self._healthy = False
        self.failed_exports += 1
        self._drops.add(n)
        self._open_until = time.monotonic() + self._backoff
        if not self._warned:
            self._warned = True
            log.warning(
                "OpenTelemetry: %d spans could not be delivered%s; the run goes on, spans are "
                "dropped for %.0f s after each failure and counted (swayscope_spans_dropped_total)",
                n,
                f" ({type(error).__name__}: {error})" if error is not None else "",
                self._backoff,
            )
        self._backoff = min(self._backoff * 2, self._max_backoff)
        return SpanExportResult.FAILURE

    def abort(self, queue: deque[Any] | None) -> None:
        """Give up: count what is still queued, stop retries; later batches are dropped."""
        self._aborted = True
        n = 0
        if queue is not None:
            while True:
                try:
                    queue.pop()
                except IndexError:
                    break
                n += 1
        self._drops.add(n)
        self._shutdown_inner()

    def _shutdown_inner(self) -> None:
        if not self._inner_shut:
            self._inner_shut = True
            try:
                self._inner.shutdown()
            except Exception as exc:
                log.debug("span exporter shutdown failed: %s", exc)

    def shutdown(self) -> None:
        self._shutdown_inner()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingProcessor(SpanProcessor):
    """Counts spans the batch processor's full queue pushes out, then delegates."""

    def __init__(self, inner: SpanProcessor, drops: _DropCounter) -> None:
        self._inner = inner
        self._drops = drops
        # BatchSpanProcessor keeps a bounded deque; a full one silently drops the oldest.
        batcher = getattr(inner, "_batch_processor", None)
        queue = getattr(batcher, "_queue", None)
        self.queue: deque[Any] | None = queue if isinstance(queue, deque) else None
        self._maxlen = (self.queue.maxlen or 0) if self.queue is not None else 0
        batcher_emit = getattr(batcher, "emit", None)
        self._batcher_emit: Callable[[ReadableSpan], None] | None = (
            batcher_emit if self.queue is not None and callable(batcher_emit) else None
        )
        #: For spans we built finished and sampled: straight into the batch queue when
        #: there is one (skips two calls and the sampled check), else ``on_end``.
        self.emit_finished: Callable[[ReadableSpan], None] = (
            self._emit_batched if self._batcher_emit is not None else self.on_end
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self.queue
        if queue is not None and len(queue) >= self._maxlen:
            self._drops.add(1)
        self._inner.on_end(span)

    def _emit_batched(self, span: ReadableSpan) -> None:
        if len(self.queue) >= self._maxlen:  # type: ignore[arg-type]
            self._drops.add(1)
        self._batcher_emit(span)  # type: ignore[misc]

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


class _Frame:
    """One open run/probe/view span and the cache counts of everything inside it."""

    __slots__ = (
        "calls", "ctx", "hits", "kind", "misses", "name", "sampled", "sc", "span",
        "span_hex", "trace_hex",
    )

    def __init__(self, kind: str, name: str, span: trace.Span, parent: Context | None) -> None:
        self.kind = kind
        self.name = name
        self.span = span
        self.ctx = trace.set_span_in_context(span, parent)
        self.sc = span.get_span_context()
        self.sampled = self.sc.is_valid and self.sc.trace_flags.sampled
        self.trace_hex = format(self.sc.trace_id, "032x") if self.sampled else None
        self.span_hex = format(self.sc.span_id, "016x") if self.sampled else None
        self.hits = 0
        self.misses = 0
        self.calls = 0


def _otlp_span_exporter(
    target: OtlpTarget, export_timeout_s: float, env: Mapping[str, str]
) -> SpanExporter:
    env_timeout = any(
        env.get(v) for v in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    )
    timeout = None if env_timeout else export_timeout_s
    try:
        if target.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter(endpoint=target.endpoint, timeout=timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(endpoint=target.endpoint, timeout=timeout)
    except ImportError as exc:
        raise TelemetryConfigError(
            f"OTLP protocol {target.protocol!r} (from {target.source}) needs "
            f"opentelemetry-exporter-otlp-proto-{'grpc' if target.protocol == 'grpc' else 'http'}"
            f", which is not installed ({exc}). Install swayscope[otel]."
        ) from exc


def _env_int(env: Mapping[str, str], name: str, default: int) -> int | None:
    """None (let the SDK read the variable) when set, else our default."""
    return None if env.get(name) else default


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, SDK defaults
    extra: dict[str, str] = {}
    current = str(resource.attributes.get("service.name", ""))
    if service_name:
        extra["service.name"] = service_name
    elif not current or current.startswith("unknown_service"):
        extra["service.name"] = "swayscope"
    if "service.version" not in resource.attributes:
        extra["service.version"] = __version__
    return resource.merge(Resource(extra)) if extra else resource


def _outer_context(env: Mapping[str, str]) -> Context | None:
    """The W3C ``TRACEPARENT`` (+ ``TRACESTATE``) of an outer trace, as a parent context."""
    header = env.get("TRACEPARENT", "").strip()
    if not header:
        return None
    carrier = {"traceparent": header}
    if env.get("TRACESTATE"):
        carrier["tracestate"] = env["TRACESTATE"]
    ctx = TraceContextTextMapPropagator().extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        log.warning(
            "ignoring TRACEPARENT=%r: not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>); "
            "the run starts its own trace",
            header,
        )
        return None
    return ctx


def _exception_event(exc: BaseException, timestamp: int) -> SpanEvent:
    """What ``Span.record_exception`` records, for spans built without the tracer."""
    cls = type(exc)
    module = cls.__module__
    return SpanEvent(
        "exception",
        {
            "exception.type": (
                f"{module}.{cls.__qualname__}" if module and module != "builtins"
                else cls.__qualname__
            ),
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "exception.escaped": "False",
        },
        timestamp,
    )


def _shutdown_ref(ref: weakref.ref[OtelExporter]) -> None:
    exporter = ref()
    if exporter is not None:
        exporter.shutdown()


class OtelExporter(Exporter):
    """Turns core events into OpenTelemetry spans; fills ``trace_id``/``span_id`` on events.

    Placed before the other exporters (``annotates_trace``) so the JSONL trace and
    Prometheus exemplars point at the spans. See the module docstring for which
    TracerProvider is used and how a dead collector is handled.
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
        flush_timeout_s: float = 1.0,
        shutdown_timeout_s: float = 5.0,
        fast_path: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.hit_spans = hit_spans
        self.capture_prompts = capture_prompts
        self.flush_timeout_s = flush_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._stack: list[_Frame] = []
        self._drops = _DropCounter()
        self._guard: _GuardedSpanExporter | None = None
        self._processor: _CountingProcessor | None = None
        self._emit_finished: Callable[[ReadableSpan], None] = lambda span: None
        self._closed = False
        self._atexit: Callable[[], None] | None = None
        self._scope = InstrumentationScope(SCOPE_NAME, __version__)
        self._root_ctx = _outer_context(env)
        self.target: OtlpTarget | None = None

        if endpoint is not None and target is None:
            target = resolve_otlp_target(
                endpoint, protocol, env,
                endpoint_source="OtelExporter(endpoint=...)",
                protocol_source="OtelExporter(protocol=...)",
            )
        provider: trace.TracerProvider | None = tracer_provider
        if provider is None and span_exporter is None and target is None:
            provider = host_tracer_provider()
        self.owns_provider = provider is None
        if provider is None:
            if span_exporter is None:
                target = target or resolve_otlp_target(None, protocol, env, default=True)
                assert target is not None
                span_exporter = _otlp_span_exporter(target, export_timeout_s, env)
                self.target = target
            provider = self._build_provider(
                span_exporter, service_name, batch, max_queue_size, schedule_delay_s, env,
                _endpoint_addr(target) if target is not None else None,
            )
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE_NAME, __version__)
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        self._fast = fast_path and self.owns_provider and not disabled
        self._resource: Resource = getattr(provider, "resource", None) or Resource.create()
        if self.owns_provider:
            ref = weakref.ref(self)
            self._atexit = lambda: _shutdown_ref(ref)
            atexit.register(self._atexit)

    def _build_provider(
        self,
        span_exporter: SpanExporter,
        service_name: str | None,
        batch: bool,
        max_queue_size: int | None,
        schedule_delay_s: float | None,
        env: Mapping[str, str],
        probe_addr: tuple[str, int] | None,
    ) -> TracerProvider:
        provider = TracerProvider(resource=_resource(service_name), shutdown_on_exit=False)
        self._guard = _GuardedSpanExporter(span_exporter, self._drops, probe_addr=probe_addr)
        inner: SpanProcessor
        if batch:
            delay = _env_int(
                env, "OTEL_BSP_SCHEDULE_DELAY", int(DEFAULT_SCHEDULE_DELAY_S * 1000)
            )
            queue = max_queue_size or _env_int(
                env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE
            )
            batch_size = _env_int(
                env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE
            )
            if queue is not None and batch_size is not None:
                batch_size = min(batch_size, queue)
            inner = BatchSpanProcessor(
                self._guard,
                max_queue_size=queue,
                schedule_delay_millis=(
                    schedule_delay_s * 1000 if schedule_delay_s is not None else delay
                ),
                max_export_batch_size=batch_size,
            )
        else:
            inner = SimpleSpanProcessor(self._guard)
        self._processor = _CountingProcessor(inner, self._drops)
        self._emit_finished = self._processor.emit_finished
        provider.add_span_processor(self._processor)
        return provider

    # -- Exporter interface --------------------------------------------------------------

    def bind(self, health: TelemetryHealth) -> None:
        super().bind(health)
        self._drops.bind(health)

    @property
    def spans_dropped(self) -> int:
        """Spans this exporter could not deliver (also counted in the bound health)."""
        return self._drops.total

    @property
    def tracer_provider(self) -> trace.TracerProvider:
        return self._provider

    def export(self, event: Event) -> None:
        if self._closed:
            return
        kind = type(event)
        if kind is CacheLookup:
            if event.hit:  # type: ignore[union-attr]
                self._on_hit(event)  # type: ignore[arg-type]
        elif kind is ForwardCall:
            self._on_forward(event)  # type: ignore[arg-type]
        elif kind is ViewEntered:
            self._on_view_entered(event)  # type: ignore[arg-type]
        elif kind is ViewExited:
            self._end_frame("view", event.view_id, event.end_ns, None, None)  # type: ignore[union-attr]
        elif kind is ProbeStarted:
            self._on_probe_started(event)  # type: ignore[arg-type]
        elif kind is ProbeEnded:
            self._on_probe_ended(event)  # type: ignore[arg-type]
        elif kind is RunStarted:
            self._on_run_started(event)  # type: ignore[arg-type]
        elif kind is RunEnded:
            self._on_run_ended(event)  # type: ignore[arg-type]

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Deliver queued spans, waiting at most ``min(timeout_s, flush_timeout_s)``; not at
        all while delivery is failing (the worker drops and counts them instead)."""
        if self._closed:
            return True
        if self._guard is not None and self._guard.failing:
            return False
        flush = getattr(self._provider, "force_flush", None)
        if flush is None:
            return True
        budget = max(0.0, min(timeout_s, self.flush_timeout_s))
        finished, ok = _call_bounded(
            lambda: flush(int(budget * 1000)), budget, "swayscope-otel-flush"
        )
        return finished and bool(ok)

    def shutdown(self) -> None:
        """End open spans, deliver what is queued (bounded), release the provider we built.

        A host's provider is flushed (bounded) but never shut down.
        """
        if self._closed:
            return
        now = time.time_ns()
        with self._lock:
            frames, self._stack = self._stack, []
        for frame in reversed(frames):
            self._finish(frame, now, None, None)
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        if not self.owns_provider:
            self.force_flush(self.shutdown_timeout_s)
            self._closed = True
            return
        self._closed = True
        provider = self._provider
        assert isinstance(provider, TracerProvider)
        finished, _ = _call_bounded(
            provider.shutdown, self.shutdown_timeout_s, "swayscope-otel-shutdown"
        )
        if not finished and self._guard is not None:
            self._guard.abort(self._processor.queue if self._processor is not None else None)

    # -- run / probe / view frames ----------------------------------------------------------

    def _start_frame(
        self, kind: str, span_name: str, name: str, start_ns: int, attrs: dict[str, Any]
    ) -> _Frame:
        with self._lock:
            parent = self._stack[-1].ctx if self._stack else self._root_ctx
        span = self._tracer.start_span(
            span_name, context=parent, kind=_INTERNAL, start_time=start_ns, attributes=attrs
        )
        frame = _Frame(kind, name, span, parent)
        with self._lock:
            self._stack.append(frame)
        return frame

    def _end_frame(
        self,
        kind: str,
        name: str | None,
        end_ns: int,
        attrs: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """Pop the innermost open ``kind`` frame (and anything left open inside it)."""
        with self._lock:
            stack = self._stack
            for i in range(len(stack) - 1, -1, -1):
                if stack[i].kind == kind and (name is None or stack[i].name == name):
                    break
            else:
                return
            popped = stack[i:]
            del stack[i:]
            # Roll the counts outwards so each span reports everything inside it.
            outer = stack[-1] if stack else None
            for inner_frame, parent in zip(
                reversed(popped), [*reversed(popped[:-1]), outer], strict=True
            ):
                if parent is not None:
                    parent.hits += inner_frame.hits
                    parent.misses += inner_frame.misses
                    parent.calls += inner_frame.calls
        for frame in reversed(popped[1:]):
            self._finish(frame, end_ns, None, None)
        self._finish(popped[0], end_ns, attrs, error)

    @staticmethod
    def _finish(
        frame: _Frame, end_ns: int, attrs: dict[str, Any] | None, error: str | None
    ) -> None:
        span = frame.span
        span.set_attributes(
            {
                "swayscope.cache.hits": frame.hits,
                "swayscope.cache.misses": frame.misses,
                "swayscope.forward.calls": frame.calls,
            }
        )
        if attrs:
            span.set_attributes(attrs)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)

    def _on_run_started(self, ev: RunStarted) -> None:
        attrs: dict[str, Any] = {
            "swayscope.run_id": ev.run_id,
            "swayscope.suite": ev.suite,
            "swayscope.base_model": ev.base_model,
            "swayscope.adapter": ev.adapter,
            "swayscope.version": ev.version or __version__,
            "swayscope.run.total_probes": ev.total_probes,
        }
        if ev.base_model:
            attrs["gen_ai.request.model"] = ev.base_model
        frame = self._start_frame("run", SPAN_RUN, ev.run_id, ev.start_ns, attrs)
        ev.trace_id, ev.span_id = frame.trace_hex, frame.span_hex

    def _on_run_ended(self, ev: RunEnded) -> None:
        attrs: dict[str, Any] = {"swayscope.run.status": ev.status}
        error = (ev.error or ev.status) if ev.status == "error" else None
        self._end_frame("run", ev.run_id, ev.end_ns, attrs, error)

    def _on_probe_started(self, ev: ProbeStarted) -> None:
        attrs: dict[str, Any] = {
            "swayscope.probe": ev.probe,
            "swayscope.probe.kind": ev.kind,
            "swayscope.probe.index": ev.index,
            "swayscope.run_id": ev.run_id,
        }
        self._start_frame("probe", SPAN_PROBE, ev.probe, ev.start_ns, attrs)

    def _on_probe_ended(self, ev: ProbeEnded) -> None:
        attrs: dict[str, Any] = {
            "swayscope.probe.status": ev.status,
            "swayscope.probe.verdict": ev.verdict,
        }
        if ev.score is not None:
            attrs["swayscope.probe.score"] = ev.score
        if ev.error is not None:
            attrs["swayscope.probe.error"] = ev.error
        error = (ev.error or "probe error") if ev.status == "error" else None
        self._end_frame("probe", ev.probe, ev.end_ns, attrs, error)

    def _on_view_entered(self, ev: ViewEntered) -> None:
        attrs: dict[str, Any] = {
            "swayscope.view_id": ev.view_id,
            "swayscope.view_kind": ev.view_kind,
            "swayscope.view.switch_seconds": ev.switch_s,
        }
        if ev.probe is not None:
            attrs["swayscope.probe"] = ev.probe
        self._start_frame("view", SPAN_VIEW, ev.view_id, ev.start_ns, attrs)

    # -- forward calls and hits (the hot path) ---------------------------------------------------

    def _on_hit(self, ev: CacheLookup) -> None:
        with self._lock:
            if not self._stack:
                frame = None
            else:
                frame = self._stack[-1]
                frame.hits += 1
        if self.hit_spans:
            attrs: dict[str, Any] = {
                "swayscope.op": ev.op,
                "swayscope.view_id": ev.view_id,
                "swayscope.view_kind": ev.view_kind,
                "swayscope.prompt_hash": ev.prompt_hash,
                "swayscope.top_k": ev.top_k,
                "swayscope.cache.hit": True,
            }
            if ev.probe is not None:
                attrs["swayscope.probe"] = ev.probe
            if self.capture_prompts and ev.prompt is not None:
                attrs["swayscope.prompt"] = ev.prompt
            start = ev.start_ns
            end = start + int(ev.duration_s * 1e9)
            self._leaf(ev, frame, SPAN_CACHE_HIT, start, end, attrs, None, None)
        elif frame is not None and frame.sampled:
            ev.trace_id = frame.trace_hex
            ev.span_id = frame.span_hex

    def _on_forward(self, ev: ForwardCall) -> None:
        with self._lock:
            if not self._stack:
                frame = None
            else:
                frame = self._stack[-1]
                frame.misses += ev.cache_misses
                frame.calls += 1
        if frame is not None and not frame.sampled and self._fast:
            return
        attrs: dict[str, Any] = {
            "swayscope.op": ev.op,
            "swayscope.view_id": ev.view_id,
            "swayscope.view_kind": ev.view_kind,
            "swayscope.batch.size": ev.batch_size,
            "swayscope.batch.id": ev.batch_id,
            "swayscope.cache.hits": ev.cache_hits,
            "swayscope.cache.misses": ev.cache_misses,
            "swayscope.top_k": ev.top_k,
            "swayscope.prompt_hashes": tuple(ev.prompt_hashes),
            "gen_ai.operation.name": ev.op,
        }
        if ev.probe is not None:
            attrs["swayscope.probe"] = ev.probe
        if ev.model:
            attrs["gen_ai.request.model"] = ev.model
        if ev.n_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = ev.n_tokens
        if self.capture_prompts and ev.prompts is not None:
            attrs["swayscope.prompts"] = tuple(ev.prompts)
        start = ev.start_ns
        self._leaf(
            ev, frame, SPAN_FORWARD, start, start + int(ev.duration_s * 1e9), attrs,
            ev.error, ev.exception,
        )

    def _leaf(
        self,
        ev: ForwardCall | CacheLookup,
        frame: _Frame | None,
        name: str,
        start: int,
        end: int,
        attrs: dict[str, Any],
        error: str | None,
        exc: BaseException | None,
    ) -> None:
        """Emit one finished span under ``frame``; set the event's trace/span ids."""
        if self._fast and frame is not None:
            if not frame.sampled:
                return
            parent = frame.sc
            span_id = _randbits(64) or 1
            status = _UNSET
            events: tuple[SpanEvent, ...] = ()
            if error is not None:
                status = Status(StatusCode.ERROR, error)
                if exc is not None:
                    events = (_exception_event(exc, end),)
            self._emit_finished(
                ReadableSpan(
                    name,
                    context=SpanContext(
                        parent.trace_id, span_id, False, _SAMPLED, parent.trace_state
                    ),
                    parent=parent,
                    resource=self._resource,
                    attributes=attrs,
                    events=events,
                    kind=_INTERNAL,
                    status=status,
                    start_time=start,
                    end_time=end,
                    instrumentation_scope=self._scope,
                )
            )
            ev.trace_id = frame.trace_hex
            ev.span_id = format(span_id, "016x")
            return
        span = self._tracer.start_span(
            name,
            context=frame.ctx if frame is not None else self._root_ctx,
            kind=_INTERNAL,
            start_time=start,
            attributes=attrs,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
            if exc is not None:
                span.record_exception(exc, timestamp=end)
        span.end(end_time=end)
        sc = span.get_span_context()
        if sc.is_valid and sc.trace_flags.sampled:
            ev.trace_id = format(sc.trace_id, "032x")
            ev.span_id = format(sc.span_id, "016x")


__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_S",
    "DEFAULT_MAX_QUEUE_SIZE",
    "SPAN_CACHE_HIT",
    "SPAN_FORWARD",
    "SPAN_PROBE",
    "SPAN_RUN",
    "SPAN_VIEW",
    "OtelExporter",
    "host_tracer_provider",
]
