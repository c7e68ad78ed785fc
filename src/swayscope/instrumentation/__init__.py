"""The observable forward-pass engine: one cache, one stats record, pluggable exporters.

v0-compatible: code written against the module swayscope grew from imports the
same names from here and runs unchanged (``BackendInstrumentation`` here is the
core, :class:`Instrumentation`, plus v0's JSONL ``trace``, see :mod:`.v0`). Importing
this package pulls in no torch, transformers, OpenTelemetry or prometheus_client.
"""

from swayscope.instrumentation.cache import _MISS, ForwardCache, measure_bytes
from swayscope.instrumentation.calls import CallContext
from swayscope.instrumentation.core import (
    BatchPlanner,
    CacheOp,
    Instrumentation,
    ProbeHandle,
    RunHandle,
    SweepHandle,
    _prompt_hash,
)
from swayscope.instrumentation.events import (
    CacheLookup,
    CallEvent,
    Event,
    ForwardCall,
    ForwardStarted,
    ProbeEnded,
    ProbeStarted,
    RemoteSpan,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    TraceRotated,
    ViewEntered,
    ViewExited,
    WorkerCallEnded,
    WorkerFailed,
    WorkerLoad,
    WorkerPoolStarted,
    WorkerStatus,
    prompt_hash,
    view_kind_of,
)
from swayscope.instrumentation.exporter import Exporter, ExporterSet, TelemetryHealth
from swayscope.instrumentation.exporters.jsonl import TraceWriter, _TraceEvent
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.tracecontext import TraceParent, new_span_id, parse_traceparent
from swayscope.instrumentation.tracing import SpanLink, SpanPlace, TraceSettings
from swayscope.instrumentation.v0 import BackendInstrumentation
from swayscope.instrumentation.vocabulary import (
    DEFAULT_TOP_K,
    PROBE_STATUSES,
    VIEW_KINDS,
    ProbeStatus,
)

__all__ = [
    "DEFAULT_TOP_K",
    "PROBE_STATUSES",
    "VIEW_KINDS",
    "_MISS",
    "BackendInstrumentation",
    "BackendStats",
    "BatchPlanner",
    "CacheLookup",
    "CacheOp",
    "CallContext",
    "CallEvent",
    "Event",
    "Exporter",
    "ExporterSet",
    "ForwardCache",
    "ForwardCall",
    "ForwardStarted",
    "Instrumentation",
    "ProbeEnded",
    "ProbeHandle",
    "ProbeStarted",
    "ProbeStatus",
    "RemoteSpan",
    "RunEnded",
    "RunHandle",
    "RunStarted",
    "SweepHandle",
    "SweepEnded",
    "SpanLink",
    "SpanPlace",
    "SweepStarted",
    "TelemetryHealth",
    "TraceParent",
    "TraceRotated",
    "TraceSettings",
    "TraceWriter",
    "ViewEntered",
    "ViewExited",
    "WorkerCallEnded",
    "WorkerFailed",
    "WorkerLoad",
    "WorkerPoolStarted",
    "WorkerStatus",
    "_TraceEvent",
    "_prompt_hash",
    "measure_bytes",
    "new_span_id",
    "parse_traceparent",
    "prompt_hash",
    "view_kind_of",
]
