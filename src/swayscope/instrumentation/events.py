"""The events the core hands to exporters.

Events are plain records with no behaviour. Times: ``start_ns`` is wall-clock
epoch nanoseconds when the thing began (what spans need); ``duration_s`` is
measured with ``perf_counter`` (what histograms need).

``trace_id``/``span_id`` start empty; a tracing exporter placed earlier in the
exporter list (the OpenTelemetry one) fills them so later exporters (JSONL,
Prometheus exemplars) can point at the span.
"""

from __future__ import annotations

from dataclasses import dataclass

from swayscope.instrumentation.hashing import prompt_hash
from swayscope.instrumentation.vocabulary import VIEW_KINDS, ProbeOutcome


def view_kind_of(view_id: str) -> str:
    """Map an exact view id (``scaled_1.25``, ``null_42_i1.0_r1.0``) to its bounded kind."""
    if view_id in ("base", "ft"):
        return view_id
    head = view_id.split("_", 1)[0]
    return head if head in ("scaled", "null") else "other"


@dataclass(slots=True)
class SweepStarted:
    """A checkpoint sweep begins: the suite runs once per adapter (each a run of its own)."""

    sweep_id: str
    start_ns: int
    suite: str = ""
    base_model: str = ""
    adapters: tuple[str, ...] = ()
    """The adapters' labels, in checkpoint order: every value the ``adapter`` label takes."""
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)
class SweepEnded:
    sweep_id: str
    end_ns: int
    duration_s: float
    status: str = "complete"
    """complete | interrupted | error"""
    adapters_done: int = 0


@dataclass(slots=True)
class RunStarted:
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


@dataclass(slots=True)
class RunEnded:
    run_id: str
    end_ns: int
    duration_s: float
    status: str = "ok"
    error: str | None = None
    """``Type: message`` of what stopped the run, prompt text redacted."""
    error_stack: str | None = None
    """Its formatted traceback, redacted like ``error``."""


@dataclass(slots=True)
class ProbeStarted:
    run_id: str
    probe: str
    kind: str
    start_ns: int
    index: int = 0
    total: int = 0


@dataclass(slots=True)
class ProbeEnded:
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


@dataclass(slots=True)
class ViewEntered:
    run_id: str
    view_id: str
    view_kind: str
    probe: str | None
    start_ns: int
    switch_s: float = 0.0
    """Seconds the backend spent switching to this view (adapter toggling, LoRA writes)."""


@dataclass(slots=True)
class ViewExited:
    run_id: str
    view_id: str
    view_kind: str
    probe: str | None
    end_ns: int
    duration_s: float


@dataclass(slots=True)
class ForwardCall:
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


@dataclass(slots=True)
class CacheLookup:
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


Event = (
    SweepStarted
    | SweepEnded
    | RunStarted
    | RunEnded
    | ProbeStarted
    | ProbeEnded
    | ViewEntered
    | ViewExited
    | ForwardCall
    | CacheLookup
)

__all__ = [
    "VIEW_KINDS",
    "CacheLookup",
    "Event",
    "ForwardCall",
    "ProbeEnded",
    "ProbeStarted",
    "RunEnded",
    "RunStarted",
    "SweepEnded",
    "SweepStarted",
    "ViewEntered",
    "ViewExited",
    "prompt_hash",
    "view_kind_of",
]
