"""OpenTelemetry exporter: the spans the core places, made through the tracer's public API.

``swayscope.run`` → ``swayscope.probe`` → ``swayscope.view`` → ``swayscope.forward``,
all of kind INTERNAL, with explicit start and end times (a forward span carries the
real start and end of its model call; a batch is one span). Cache hits are counted
on the enclosing span (``swayscope.cache.hits``, cumulative: a probe's count
includes its views'); with ``hit_spans=True`` each hit also gets a
``swayscope.cache_hit`` span.

The core lays traces out (:mod:`swayscope.instrumentation.tracing`); this exporter
declares its settings (``max_spans_per_trace``, ``chunk_seconds``, ``hit_spans``,
``TRACEPARENT``, the sampler's ratio) and makes each span where the event says
(:mod:`.spans`), with the core's ids when the provider is ours:

- a run is a trace of its own: a short ``swayscope.run`` root that ends as the run
  starts (so the backend holds it from the first seconds, and after a SIGKILL) and a
  ``swayscope.run.outcome`` child that ends with the run: status, probes done and
  errored, counts, exception events (the first ten errored probes' too);
- each probe (a unit of work) is a trace of its own whose root links to the run's
  root and carries ``swayscope.run_id`` and ``swayscope.chunk.index``; a unit that
  reaches ``max_spans_per_trace`` spans (1,000) or runs ``chunk_seconds`` (10 s) goes
  on in a new trace, linked to the run and to the chunk before;
- a sweep, like a run: a ``swayscope.sweep`` root and a ``swayscope.sweep.outcome``.

Root first (:mod:`.holding`)
    With a provider built here, a trace's spans go to delivery only once its root has
    ended, root first: each span the backend holds has its root there too, mid-run or
    after a SIGKILL. A host's provider delivers as its own processors do; wrap them in
    :class:`RootFirstSpanProcessor` for the same guarantee.

Errors
    A span whose work failed has status ERROR and an ``exception`` event made of the
    core's redacted texts, never of the exception's own message, which may quote a
    prompt. The run's outcome is ERROR when the run raised or any probe errored; a
    probe stopped by Ctrl-C ends ``not_run``, not as an error.

Which TracerProvider (:mod:`.provider`)
    ``tracer_provider=`` is used as given. Otherwise, without an explicit
    ``endpoint``/``span_exporter``, a TracerProvider the host application installed
    globally is used as is (its spans get ids of its own choosing: the JSONL trace and
    exemplars then name the core's ids, which that backend does not hold). Otherwise
    this exporter builds its own (not installed globally): resource from
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, sampler from
    ``OTEL_TRACES_SAMPLER`` (parent-based, as the core samples), a span queue sized by
    ``OTEL_BSP_*`` (:mod:`.environment`), an OTLP exporter whose endpoint and protocol
    come from the arguments or ``OTEL_EXPORTER_OTLP_*``.

Every span is delivered or counted (:mod:`.processor`, :mod:`.accounting`)
    With its own provider, spans leave through a bounded queue and one worker thread;
    each span is either delivered or counted in ``TelemetryHealth.spans_dropped``
    (queue full, export failed, given up at shutdown; the core counts the workers'
    spans a full trace had no room for).

A slow or dead collector never slows the run (:mod:`.guard`)
    Until a first delivery succeeds, and again after a failure, a 0.25 s TCP connect
    to the endpoint comes first, so a closed port fails in a millisecond instead of the
    SDK exporter's seconds of retries; after a failure batches are refused at once for
    a back-off period (5 s, doubling to 60 s). ``force_flush`` at run end waits at most
    ``flush_timeout_s`` (1 s) and not at all while delivery is failing; ``shutdown``
    (and the atexit hook) at most ``shutdown_timeout_s`` (5 s), then counts what is
    still queued as dropped.

Span names and attribute keys are defined once, in :mod:`.attributes`.
"""

from swayscope.instrumentation.exporters.otel.attributes import (
    SCOPE_NAME,
    SPAN_CACHE_HIT,
    SPAN_FORWARD,
    SPAN_PROBE,
    SPAN_RUN,
    SPAN_RUN_OUTCOME,
    SPAN_VIEW,
)
from swayscope.instrumentation.exporters.otel.environment import (
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_S,
)
from swayscope.instrumentation.exporters.otel.exporter import OtelExporter
from swayscope.instrumentation.exporters.otel.holding import RootFirstSpanProcessor
from swayscope.instrumentation.exporters.otel.provider import host_tracer_provider
from swayscope.instrumentation.tracing import DEFAULT_CHUNK_SECONDS, DEFAULT_MAX_SPANS_PER_TRACE

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_EXPORT_TIMEOUT_S",
    "DEFAULT_MAX_EXPORT_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_SPANS_PER_TRACE",
    "DEFAULT_SCHEDULE_DELAY_S",
    "SCOPE_NAME",
    "SPAN_CACHE_HIT",
    "SPAN_FORWARD",
    "SPAN_PROBE",
    "SPAN_RUN",
    "SPAN_RUN_OUTCOME",
    "SPAN_VIEW",
    "OtelExporter",
    "RootFirstSpanProcessor",
    "host_tracer_provider",
]
