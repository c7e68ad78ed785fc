"""OpenTelemetry exporter: a span tree per run, one span per model call.

``swayscope.run`` → ``swayscope.probe`` → ``swayscope.view`` → ``swayscope.forward``,
all of kind INTERNAL, made with the tracer's own ``start_span``/``end`` (explicit
start and end times: a forward span carries the real start and end of its model
call; a batch is one span). Cache hits are counted on the enclosing span
(``swayscope.cache.hits``, cumulative: a probe's count includes its views'); with
``hit_spans=True`` each hit also gets a ``swayscope.cache_hit`` span.

Which TracerProvider (:mod:`.provider`)
    ``tracer_provider=`` is used as given. Otherwise, without an explicit
    ``endpoint``/``span_exporter``, a TracerProvider the host application
    installed globally is used as is. Otherwise this exporter builds its own
    (not installed globally): resource from ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES``, sampler from ``OTEL_TRACES_SAMPLER``, a span
    queue sized by ``OTEL_BSP_*`` (:mod:`.environment`), an OTLP exporter whose
    endpoint and protocol come from the arguments or ``OTEL_EXPORTER_OTLP_*``.
    ``TRACEPARENT`` (W3C) makes the run span a child of an outer trace.

Every span is delivered or counted (:mod:`.processor`, :mod:`.accounting`)
    With its own provider, spans leave through a bounded queue and one worker
    thread; each span is either delivered or counted in
    ``TelemetryHealth.spans_dropped`` (queue full, export failed, given up at
    shutdown).

A slow or dead collector never slows the run (:mod:`.guard`)
    Until a first delivery succeeds, and again after a failure, a 0.25 s TCP
    connect to the endpoint comes first, so a closed port fails in a millisecond
    instead of the SDK exporter's seconds of retries; after a failure batches are
    refused at once for a back-off period (5 s, doubling to 60 s).
    ``force_flush`` at run end waits at most ``flush_timeout_s`` (1 s) and not at
    all while delivery is failing; ``shutdown`` (and the atexit hook) at most
    ``shutdown_timeout_s`` (5 s), then counts what is still queued as dropped.

Span names and attribute keys are defined once, in :mod:`.attributes`.
"""

from swayscope.instrumentation.exporters.otel.attributes import (
    SCOPE_NAME,
    SPAN_CACHE_HIT,
    SPAN_FORWARD,
    SPAN_PROBE,
    SPAN_RUN,
    SPAN_VIEW,
)
from swayscope.instrumentation.exporters.otel.environment import (
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_S,
)
from swayscope.instrumentation.exporters.otel.exporter import OtelExporter
from swayscope.instrumentation.exporters.otel.provider import host_tracer_provider

__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_S",
    "DEFAULT_MAX_EXPORT_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_SCHEDULE_DELAY_S",
    "SCOPE_NAME",
    "SPAN_CACHE_HIT",
    "SPAN_FORWARD",
    "SPAN_PROBE",
    "SPAN_RUN",
    "SPAN_VIEW",
    "OtelExporter",
    "host_tracer_provider",
]
