"""What a model call and a cache hit become: counters, and the events exporters receive.

The core decides hit or miss; a :class:`CallRecorder` counts the outcome in the
owner's :class:`~swayscope.instrumentation.stats.BackendStats` and, when anyone
listens, builds the :class:`~swayscope.instrumentation.events.ForwardCall` and
:class:`~swayscope.instrumentation.events.CacheLookup` events. Error text on
events is redacted of the failing call's prompts unless prompts are captured.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from swayscope.instrumentation.cache import ForwardCache
from swayscope.instrumentation.calls import CallContext
from swayscope.instrumentation.events import CacheLookup, ForwardCall, ForwardStarted, view_kind_of
from swayscope.instrumentation.exporter import ExporterSet
from swayscope.instrumentation.hashing import PROMPT_HASH_CHARS, PromptHasher
from swayscope.instrumentation.redaction import redact_texts
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.tracecontext import TraceParent

#: Texts of recently failed prompts kept (in memory only) to redact error messages.
_FAILED_PROMPTS_KEPT = 64


def _new_batch_id() -> str:
    return os.urandom(8).hex()


def _n_tokens(value: Any) -> int | None:
    n = getattr(value, "n_tokens", None)
    return n if isinstance(n, int) else None


def _total(values: Sequence[Any], name: str) -> int | None:
    """The sum of the integer attribute ``name`` over ``values``; None when none has it."""
    found = [v for v in (getattr(x, name, None) for x in values) if isinstance(v, int)]
    return sum(found) if found else None


def _stack(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


class EventContext(Protocol):
    """Where the current run id and probe are read from."""

    @property
    def run_id(self) -> str: ...

    @property
    def current_probe(self) -> str | None: ...


class RecordOwner(Protocol):
    """What a recorder reads of the instrumentation that owns it."""

    cache: ForwardCache
    stats: BackendStats
    capture_prompts: bool
    model_name: str

    @property
    def run_id(self) -> str: ...

    @property
    def current_probe(self) -> str | None: ...


class CallRecorder:
    """Counts hits and model calls of one instrumentation and emits their events."""

    def __init__(
        self, owner: RecordOwner, hasher: PromptHasher, exporters: ExporterSet
    ) -> None:
        self._owner = owner
        self._hasher = hasher
        self._keyed = hasher.keyed
        self._exporters = exporters
        self._scopes: EventContext = owner
        self._stats_lock = threading.Lock()
        self._lock = threading.Lock()
        self._failed_prompts: deque[str] = deque(maxlen=_FAILED_PROMPTS_KEPT)
        self._kinds: dict[str, str] = {}
        self._run_start = BackendStats()
        self._run_max_batch = 0

    def bind_scopes(self, scopes: EventContext) -> None:
        """Read run id and current probe straight from the scopes (the hit path reads them
        on every lookup)."""
        self._scopes = scopes

    def start_run(self) -> None:
        """A run starts: its own counters (:meth:`run_stats`) count from here."""
        with self._stats_lock:
            self._run_start = self._owner.stats.copy()
            self._run_max_batch = 0

    def run_stats(self) -> BackendStats:
        """The counters since the current (or last) run started; ``stats`` counts every run."""
        with self._stats_lock:
            return self._owner.stats.since(self._run_start, max_batch_size=self._run_max_batch)

    def redact(self, message: str) -> str:
        """``message`` without the text of any prompt whose computation recently failed
        (unless prompts are captured): for errors that leave the process."""
        if self._owner.capture_prompts or not self._failed_prompts:
            return message
        with self._lock:
            texts = list(self._failed_prompts)
        return redact_texts(message, texts, self._hasher)

    def _error_text(self, exc: BaseException, prompts: Sequence[str]) -> str:
        if not self._owner.capture_prompts:
            with self._lock:
                self._failed_prompts.extend(prompts)
        return self.redact(f"{type(exc).__name__}: {exc}")

    def hit(
        self,
        op: str,
        view_id: str,
        top_k: int,
        wall: float,
        prompt: str,
        digest: bytes,
        batch_id: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Count one cache hit; emit its CacheLookup when anyone listens."""
        owner = self._owner
        with self._stats_lock:
            owner.stats.cache_hits += 1
            owner.stats.scoring_wall_s += wall
        exporters = self._exporters
        if not exporters:
            return
        scopes = self._scopes
        # Positional on purpose: a slotted dataclass takes keywords ~4x slower, and this
        # runs on every hit. Fields are only ever added at the end (the event contract).
        exporters.emit(
            CacheLookup(
                scopes.run_id, op, view_id, self._view_kind(view_id), scopes.current_probe,
                self._hasher(prompt) if self._keyed else digest.hex()[:PROMPT_HASH_CHARS],
                top_k, True, time.time_ns() - int(wall * 1e9), wall, batch_id, batch_size,
                None, None, None, prompt if owner.capture_prompts else None,
            )
        )

    def _view_kind(self, view_id: str) -> str:
        kind = self._kinds.get(view_id)
        if kind is None:
            kind = self._kinds[view_id] = view_kind_of(view_id)
        return kind

    def start_call(
        self, op: str, view_id: str, top_k: int, batch_size: int, start_ns: int
    ) -> CallContext:
        """A forward call about to be computed elsewhere: its context, announced (when
        anyone listens) so that a tracing exporter can start its span and say its ids."""
        batch_id = _new_batch_id()
        exporters, scopes = self._exporters, self._scopes
        if not exporters:
            return CallContext(batch_id)
        started = ForwardStarted(
            run_id=scopes.run_id,
            op=op,
            view_id=view_id,
            view_kind=self._view_kind(view_id),
            probe=scopes.current_probe,
            top_k=top_k,
            batch_id=batch_id,
            batch_size=batch_size,
            start_ns=start_ns,
            model=self._owner.model_name,
        )
        exporters.emit(started)
        parent = None
        if started.trace_id and started.span_id:
            parent = TraceParent(started.trace_id, started.span_id)
        return CallContext(batch_id, parent)

    def record_call(
        self,
        op: str,
        view_id: str,
        top_k: int,
        prompts: list[str],
        digests: list[bytes],
        values: list[Any],
        start_ns: int,
        wall: float,
        hits: int,
        *,
        batched: bool,
        exc: BaseException | None = None,
        context: CallContext | None = None,
    ) -> str:
        """Count one model call and emit its ForwardCall and per-prompt miss events
        (``context``: the call's, when it was announced with :meth:`start_call`)."""
        owner = self._owner
        n = len(prompts)
        tokens = [_n_tokens(v) for v in values] if exc is None else [None] * n
        known = [t for t in tokens if t is not None]
        n_tokens = sum(known) if known else None
        computed = _total(values, "tokens_computed")
        reused = _total(values, "tokens_reused")
        kind = self._view_kind(view_id)
        base = kind == "base"
        with self._stats_lock:
            s = self._owner.stats
            s.cache_misses += n
            s.forward_calls += 1
            s.base_forward_calls += base
            s.scoring_wall_s += wall
            if exc is not None:
                s.compute_errors += 1
            else:
                s.forward_passes += n
                s.base_forward_passes += n * base
                s.n_tokens += n_tokens or 0
                s.tokens_computed += computed or 0
                s.prefix_tokens_reused += reused or 0
                if batched:
                    s.batches_sent += 1
                    s.batched_prompts += n
                    s.max_batch_size = max(s.max_batch_size, n)
                    self._run_max_batch = max(self._run_max_batch, n)
            s.cache_evictions = owner.cache.evictions
        error = self._error_text(exc, prompts) if exc is not None else None
        batch_id = context.batch_id if context is not None else _new_batch_id()
        exporters, scopes = self._exporters, self._scopes
        if not exporters:
            return batch_id
        hashes = [self._hasher(p, d) for p, d in zip(prompts, digests, strict=True)]
        call = ForwardCall(
            run_id=scopes.run_id,
            op=op,
            view_id=view_id,
            view_kind=kind,
            probe=scopes.current_probe,
            top_k=top_k,
            batch_id=batch_id,
            batch_size=n,
            cache_hits=hits,
            cache_misses=n,
            prompt_hashes=hashes,
            start_ns=start_ns,
            duration_s=wall,
            n_tokens=n_tokens,
            n_tokens_computed=computed,
            n_tokens_reused=reused,
            model=owner.model_name,
            error=error,
            exception=exc,
            error_stack=self.redact(_stack(exc)) if exc is not None else None,
            cache_entries=len(owner.cache),
            cache_bytes=owner.cache.nbytes,
            cache_evictions=owner.cache.evictions,
            prompts=prompts if owner.capture_prompts else None,
        )
        if context is not None:
            parent = context.traceparent
            if parent is not None:
                call.trace_id, call.span_id = parent.trace_id, parent.span_id
            call.remote_spans = tuple(context.spans)
            call.call_events = tuple(context.events)
        exporters.emit(call)
        share = wall / n if n else 0.0
        for i, phash in enumerate(hashes):
            exporters.emit(
                CacheLookup(
                    run_id=scopes.run_id,
                    op=op,
                    view_id=view_id,
                    view_kind=kind,
                    probe=scopes.current_probe,
                    prompt_hash=phash,
                    top_k=top_k,
                    hit=False,
                    start_ns=start_ns,
                    duration_s=share,
                    batch_id=batch_id,
                    batch_size=n,
                    batch_duration_s=wall,
                    n_tokens=tokens[i],
                    error=error,
                    prompt=prompts[i] if owner.capture_prompts else None,
                    trace_id=call.trace_id,
                    span_id=call.span_id,
                )
            )
        return batch_id


__all__ = ["CallRecorder", "EventContext", "RecordOwner"]
