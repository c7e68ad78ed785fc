"""What the driver and a worker of a pool send each other: plain values, pickled by Ray.

The driver sends a worker its :class:`WorkerConfig` once (the model to load and the
settings to compute with), then one :class:`CallRequest` per part of a forward call:
token ids, the view's id and :class:`~swayscope.backends.hf.view_state.ViewState`,
the adapter it needs (:class:`AdapterRef`; a sweep's adapters come and go on the same
base), its task (what a forward call needs, or a greedy generation's limits), and the
call's W3C ``traceparent``. The worker answers with :class:`WorkerFacts` once (what the
driver needs to know of the model, or why it could not load it), an :class:`AttachReply`
when it is given another adapter, and a :class:`CallReply` per part: the records or
generations, its timings, what its forward pass counted, its memory, and the spans it
recorded under the traceparent. Nothing about probes or the cache goes either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from swayscope.backends.api import DEFAULT_MAX_NULL_ADAPTERS
from swayscope.backends.hf.rows import Need
from swayscope.backends.hf.view_state import ViewState
from swayscope.instrumentation.events import RemoteSpan


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The model a worker loads and the settings its forward pass uses."""

    index: int
    base_path: str
    adapter_path: str
    gguf_file: str | None
    device: str
    dtype: str
    max_top_k: int
    max_batch_size: int
    max_batch_tokens: int
    prefix_cache_max_bytes: int
    threads: int
    seed: int = 0
    call_overhead_tokens: int | None = None
    max_null_adapters: int = DEFAULT_MAX_NULL_ADAPTERS


@dataclass(frozen=True, slots=True)
class AdapterRef:
    """An adapter a worker must hold to compute a part: its folder and what it is (the
    SHA-256 of its files, as the driver's cache keys name it)."""

    path: str
    content: str


@dataclass(frozen=True, slots=True)
class AttachReply:
    """How a worker took an adapter it was given."""

    worker: int
    pid: int
    load_s: float = 0.0
    """Seconds the swap took (0: the worker held it already)."""
    error: str | None = None
    """Why it could not be attached; the worker's previous adapter is back in place."""
    lora_rank: int = 0


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """What a worker knows once it tried to load the model."""

    index: int
    pid: int
    node: str
    """The host it runs on."""
    error: str | None = None
    """Why the model could not be loaded (the worker's own message); None when it was."""
    adapter_error: bool = False
    """The base loaded but the adapter could not be attached to it."""
    vocab_size: int = 0
    context_length: int | None = None
    lora_rank: int = 0
    call_overhead_tokens: int = 0
    prefix_reuse: bool = False
    device: str = ""
    dtype: str = ""
    threads: int = 0


@dataclass(frozen=True, slots=True)
class GenerateTask:
    """A part of a greedy generation call: at most ``max_new_tokens`` per prompt, each
    ended at the first of the (canonical) ``stop`` strings."""

    max_new_tokens: int
    stop: tuple[str, ...]


#: What a part asks of a worker: forward records (``Need``) or generations.
Task = Need | GenerateTask


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One worker's part of a forward call."""

    batch: list[list[int]]
    view_id: str
    view: ViewState
    task: Task
    traceparent: str | None
    """The call's span (W3C ``traceparent``); None: record no spans."""
    dispatched_ns: int
    """When the driver sent it (wall clock, ns): the start of the queue-wait span."""
    attempt: int = 1
    adapter: AdapterRef | None = None
    """The adapter the part needs, attached first when the worker holds another (after a
    restart, or a part retried away from its home); None: any (the base view, or a pool
    whose adapter never changes)."""


@dataclass(frozen=True, slots=True)
class CallReply:
    """What a worker computed for one part, and what it cost."""

    records: list[Any]
    """A :class:`~swayscope.backends.hf.rows.ForwardRecord` per text, or a
    :class:`~swayscope.backends.api.Generation` per prompt (a :class:`GenerateTask`)."""
    worker: int
    pid: int
    started_ns: int
    """When the worker took the part up (the end of its queue wait)."""
    compute_start_ns: int
    ended_ns: int
    compute_s: float
    n_tokens: int
    counts: dict[str, int] = field(default_factory=dict)
    """What the worker's forward pass counted for this part (model invocations, prefix
    hits, prefix evictions, out-of-memory splits)."""
    prefix_entries: int = 0
    prefix_bytes: int = 0
    """The worker's prefix store after the part (levels, not counts)."""
    memory_bytes: int = 0
    device_memory_bytes: int = 0
    spans: tuple[RemoteSpan, ...] = ()
    error: str | None = None
    """``Type: message`` when the forward pass failed on this part (not a lost worker)."""


__all__ = [
    "AdapterRef", "AttachReply", "CallReply", "CallRequest", "GenerateTask", "Task",
    "WorkerConfig", "WorkerFacts",
]
