"""The observable forward-pass engine: one cache, one stats record, pluggable exporters.

Seed-compatible: code written against the seed module imports the same names
from here and runs unchanged. Importing this package pulls in no torch,
transformers, OpenTelemetry or prometheus_client.
"""

from swayscope.instrumentation.cache import _MISS, ForwardCache, measure_bytes
from swayscope.instrumentation.core import (
    PROBE_STATUSES,
    BackendInstrumentation,
    BatchPlanner,
    CacheOp,
    ProbeHandle,
    RunHandle,
    _prompt_hash,
)
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
    prompt_hash,
    view_kind_of,
)
from swayscope.instrumentation.exporter import Exporter, ExporterSet, TelemetryHealth
from swayscope.instrumentation.exporters.jsonl import TraceWriter, _TraceEvent
from swayscope.instrumentation.stats import BackendStats

__all__ = [
    "PROBE_STATUSES",
    "_MISS",
    "BackendInstrumentation",
    "BackendStats",
    "BatchPlanner",
    "CacheLookup",
    "CacheOp",
    "Event",
    "Exporter",
    "ExporterSet",
    "ForwardCache",
    "ForwardCall",
    "ProbeEnded",
    "ProbeHandle",
    "ProbeStarted",
    "RunEnded",
    "RunHandle",
    "RunStarted",
    "TelemetryHealth",
    "TraceWriter",
    "ViewEntered",
    "ViewExited",
    "_TraceEvent",
    "_prompt_hash",
    "measure_bytes",
    "prompt_hash",
    "view_kind_of",
]
