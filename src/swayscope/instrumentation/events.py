"""The events the core hands to exporters.

Events are immutable records with no behaviour (named tuples: as cheap to make as a
slotted class, and no exporter can write into one). Times: ``start_ns`` is
wall-clock epoch nanoseconds when the thing began (what spans need);
``duration_s`` is measured with ``perf_counter`` (what histograms need).

Ids are the core's: when a tracing exporter is attached, the core lays traces out
(:mod:`.tracing`) and puts on each event where its span goes (``place``) and the ids
other exporters point at (``trace_id``/``span_id``: the JSONL trace, Prometheus
exemplars). Without one they are None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from swayscope.instrumentation.hashing import prompt_hash
from swayscope.instrumentation.tracing import Counts, Rotation, SpanPlace
from swayscope.instrumentation.vocabulary import VIEW_KINDS, ProbeOutcome


def view_kind_of(view_id: str) -> str:
    """Map an exact view id (``scaled_1.25``, ``null_42_i1.0_r1.0``) to its bounded kind."""
    if view_id in ("base", "ft"):
        return view_id
    head = view_id.split("_", 1)[0]
    return head if head in ("scaled", "null") else "other"


class SweepStarted(NamedTuple):
    """A checkpoint sweep begins: the suite runs once per adapter (each a run of its own)."""

    sweep_id: str
    start_ns: int
    suite: str = ""
    base_model: str = ""
    adapters: tuple[str, ...] = ()
    """The adapters' labels, in checkpoint order: every value the ``adapter`` label takes."""
    trace_id: str | None = None
    span_id: str | None = None
    place: SpanPlace | None = None
    """The sweep's root span: it ends as the sweep starts (its trace exists from then on)."""


class SweepEnded(NamedTuple):
    sweep_id: str
    end_ns: int
    duration_s: float
    status: str = "complete"
    """complete | interrupted | error"""
    adapters_done: int = 0
    place: SpanPlace | None = None
    """The sweep's outcome span, a child of its root: from the start to the end."""
    start_ns: int = 0


class RunStarted(NamedTuple):
    run_id: str
    start_ns: int
    suite: str = ""
    base_model: str = ""
    adapter: str = ""
    total_probes: int = 0
    version: str = ""
    probes: tuple[str, ...] = ()
    """Names of the probes the run will execute, in order (bounded label values)."""
    threads: int | None = None
    """CPU threads the backend computes with (None: not set by swayscope)."""
    trace_id: str | None = None
    span_id: str | None = None
    sweep_id: str | None = None
    """The sweep this run is one adapter of (None: a run on its own)."""
    place: SpanPlace | None = None
    """The run's root span: it ends as the run starts, so the run's trace exists from its
    first seconds; ``trace_id``/``span_id`` name it."""
    resumed_from: str | None = None
    """The run id of the run this one resumes (a span link of kind ``resumed``)."""


class RunEnded(NamedTuple):
    run_id: str
    end_ns: int
    duration_s: float
    status: str = "ok"
    error: str | None = None
    """``Type: message`` of what stopped the run, prompt text redacted."""
    error_stack: str | None = None
    """Its formatted traceback, redacted like ``error``."""
    place: SpanPlace | None = None
    """The run's outcome span, a child of its root: from the start to the end."""
    start_ns: int = 0
    counts: Counts = Counts()
    """Cache hits, misses and model calls of the whole run."""
    probes_done: int = 0
    probes_errored: int = 0


class ProbeStarted(NamedTuple):
    run_id: str
    probe: str
    kind: str
    start_ns: int
    # The probe's place in the run: shadows tuple.index, which no reader of an event uses.
    index: int = 0  # type: ignore[assignment]
    total: int = 0
    place: SpanPlace | None = None
    """The probe's span: the root of a trace of its own (its first chunk)."""


class ProbeEnded(NamedTuple):
    run_id: str
    probe: str
    kind: str
    end_ns: int
    duration_s: float
    status: ProbeOutcome
    verdict: str = ""
    score: float | None = None
    error: str | None = None
    """``Type: message`` of a probe that raised, prompt text redacted."""
    done: int = 0
    total: int = 0
    error_stack: str | None = None
    """The formatted traceback of ``error``, redacted like it."""
    place: SpanPlace | None = None
    """The span that ends here (the probe's last chunk)."""
    counts: Counts = Counts()
    """Cache hits, misses and model calls inside the probe, from its start."""


class ViewEntered(NamedTuple):
    run_id: str
    view_id: str
    view_kind: str
    probe: str | None
    start_ns: int
    switch_s: float = 0.0
    """Seconds the backend spent switching to this view (adapter toggling, LoRA writes)."""
    place: SpanPlace | None = None


class ViewExited(NamedTuple):
    run_id: str
    view_id: str
    view_kind: str
    probe: str | None
    end_ns: int
    duration_s: float
    place: SpanPlace | None = None
    """The span that ends here (the view's last chunk)."""
    counts: Counts = Counts()


class TraceRotated(NamedTuple):
    """A unit of work's trace was full or old: its open spans ended and went on in a new
    trace (the next chunk), in ``rotations`` order, outermost first."""

    run_id: str
    at_ns: int
    rotations: tuple[Rotation, ...]


#: Attribute values a remote span or a call event carries (as OpenTelemetry takes them).
AttributeValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class RemoteSpan:
    """A span another process recorded for its part of a forward call (a worker's queue
    wait, its compute), under the call's W3C ``traceparent``: ``trace_id`` and
    ``parent_span_id`` name the call's span. A tracing exporter makes it a child of that
    span, in the driver's trace, with the worker's ``span_id`` where it can."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None
    """``Type: message`` when the part failed (redacted like every error text)."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something that happened during a forward call (a worker lost and its part retried
    elsewhere): an event on the call's span."""

    name: str
    time_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


class ForwardStarted(NamedTuple):
    """A forward call is about to be computed elsewhere (a pool of workers).

    Emitted only for a compute that propagates its trace context (``propagate=True``;
    see ``BackendInstrumentation.current_call``), before the compute starts. A tracing
    exporter may start the call's span now; its ids (``trace_id``/``span_id``) travel with
    the call as its W3C ``traceparent``; the call's :class:`ForwardCall` then carries the
    same ids, ``place`` and ``batch_id``.
    """

    run_id: str
    op: str
    view_id: str
    view_kind: str
    probe: str | None
    top_k: int
    batch_id: str
    batch_size: int
    start_ns: int
    model: str = ""
    trace_id: str | None = None
    span_id: str | None = None
    place: SpanPlace | None = None


class ForwardCall(NamedTuple):
    """One real model invocation: a batch of missed prompts is one ForwardCall."""

    run_id: str
    op: str
    view_id: str
    view_kind: str
    probe: str | None
    top_k: int
    batch_id: str
    batch_size: int
    cache_hits: int
    """Lookups of the same cached()/cached_batch() call served from the cache."""
    cache_misses: int
    prompt_hashes: list[str]
    start_ns: int
    duration_s: float
    n_tokens: int | None = None
    """Tokens of the call's texts (what was scored)."""
    n_tokens_computed: int | None = None
    """Token positions the model ran for the call (shared prefixes once; no padding);
    None when the backend does not say."""
    n_tokens_reused: int | None = None
    """Token positions of the call's texts taken from a shared prefix instead of computed."""
    model: str = ""
    error: str | None = None
    """``Type: message`` of a failed call, prompt text redacted unless captured."""
    exception: BaseException | None = None
    """The exception itself, for its type; its message may quote prompt text (use ``error``)."""
    error_stack: str | None = None
    """The formatted traceback, redacted like ``error``."""
    cache_entries: int = 0
    cache_bytes: int = 0
    cache_evictions: int = 0
    trace_id: str | None = None
    span_id: str | None = None
    prompts: list[str] | None = None
    """The prompt texts, in ``prompt_hashes`` order; only set when the user opted in to
    capturing prompt text."""
    remote_spans: tuple[RemoteSpan, ...] = ()
    """Spans the workers that computed the call recorded under its ``traceparent``."""
    call_events: tuple[CallEvent, ...] = ()
    """What happened during the call (a worker lost, its part retried)."""
    place: SpanPlace | None = None
    """Where the call's span goes (``trace_id``/``span_id`` name it)."""
    n_tokens_generated: int | None = None
    """Tokens the call generated (the ``generate`` op); None for the scoring ops."""


class CacheLookup(NamedTuple):
    """One prompt looked up in the cache: the JSONL trace's unit (one line each)."""

    run_id: str
    op: str
    view_id: str
    view_kind: str
    probe: str | None
    prompt_hash: str
    top_k: int
    hit: bool
    start_ns: int
    duration_s: float
    """Hit: lookup time. Miss: this prompt's share of the forward call (v0 meaning)."""
    batch_id: str | None = None
    batch_size: int | None = None
    batch_duration_s: float | None = None
    n_tokens: int | None = None
    error: str | None = None
    prompt: str | None = None
    """Only set when the user opted in to capturing prompt text."""
    trace_id: str | None = None
    span_id: str | None = None
    """The span the lookup belongs to: its own (hit spans), its forward call's (a miss), or
    the enclosing probe's or view's (a hit)."""
    place: SpanPlace | None = None
    """A hit's own span, when every hit gets one (``hit_spans``)."""
    tier: str | None = None
    """Where a hit came from: ``memory`` or ``disk`` (the durable tier); None: a miss."""


class DiskCacheState(NamedTuple):
    """The durable tier after a batch was written (or when a run starts or ends): the
    file's entries, bytes and evictions so far, and what this process wrote or failed to."""

    entries: int
    nbytes: int
    evictions: int
    written: int
    write_failures: int
    enabled: bool


class WorkerPoolStarted(NamedTuple):
    """A pool of forward workers is up: its workers' labels (``"0"`` … ``"N-1"``, the
    bounded ``worker`` label) and where it runs."""

    workers: tuple[str, ...]
    address: str
    start_ns: int


class WorkerLoad(NamedTuple):
    """A worker's calls in flight changed (a part dispatched to it, or one came back)."""

    worker: str
    in_flight: int


class WorkerCallEnded(NamedTuple):
    """A worker computed its part of a forward call."""

    worker: str
    start_ns: int
    """When the worker started computing (wall clock, ns)."""
    duration_s: float
    """Compute time on the worker."""
    queue_s: float
    """From the driver's dispatch to the start of the compute: transfer and queueing."""
    batch_size: int
    n_tokens: int
    memory_bytes: int
    """The worker process's resident memory after the call."""
    device_memory_bytes: int = 0
    """Accelerator memory the worker's tensors hold (0 on a CPU)."""
    trace_id: str | None = None
    span_id: str | None = None
    """The worker's compute span, when the call was traced (for exemplars)."""


class WorkerFailed(NamedTuple):
    """A worker was lost while it held part of a forward call; the part is retried."""

    worker: str
    error: str
    time_ns: int


class WorkerStatus(NamedTuple):
    """A worker can take calls (``up``) or not (lost, restarting, or gone for good)."""

    worker: str
    up: bool


Event = (
    SweepStarted
    | SweepEnded
    | RunStarted
    | RunEnded
    | ProbeStarted
    | ProbeEnded
    | ViewEntered
    | ViewExited
    | TraceRotated
    | ForwardStarted
    | ForwardCall
    | CacheLookup
    | DiskCacheState
    | WorkerPoolStarted
    | WorkerLoad
    | WorkerCallEnded
    | WorkerFailed
    | WorkerStatus
)

__all__ = [
    "VIEW_KINDS",
    "AttributeValue",
    "CacheLookup",
    "CallEvent",
    "DiskCacheState",
    "Event",
    "ForwardCall",
    "ForwardStarted",
    "ProbeEnded",
    "ProbeStarted",
    "RemoteSpan",
    "RunEnded",
    "RunStarted",
    "SweepEnded",
    "SweepStarted",
    "TraceRotated",
    "ViewEntered",
    "ViewExited",
    "WorkerCallEnded",
    "WorkerFailed",
    "WorkerLoad",
    "WorkerPoolStarted",
    "WorkerStatus",
    "prompt_hash",
    "view_kind_of",
]
