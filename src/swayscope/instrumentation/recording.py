"""What a model call and a cache hit become: counters, trace places, and events.

The core decides hit or miss; a :class:`CallRecorder` is the one writer of every
counter — the instrumentation's :class:`~swayscope.instrumentation.stats.BackendStats`,
the current run's own, the open frames' — under one lock, places spans in the trace
layout (:mod:`.tracing`) and, when anyone listens, builds the
:class:`~swayscope.instrumentation.events.ForwardCall` and
:class:`~swayscope.instrumentation.events.CacheLookup` events. Backends report what
they did (:meth:`CallRecorder.report`) instead of writing counters themselves. Error
text on events is redacted of the failing call's prompts unless prompts are captured.
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
from swayscope.instrumentation.events import (
    CacheLookup,
    ForwardCall,
    ForwardStarted,
    TraceRotated,
    view_kind_of,
)
from swayscope.instrumentation.exporter import ExporterSet
from swayscope.instrumentation.hashing import PROMPT_HASH_CHARS, PromptHasher
from swayscope.instrumentation.redaction import redact_texts
from swayscope.instrumentation.scopes import NO_SCOPE, Scope
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.tracecontext import TraceParent
from swayscope.instrumentation.tracing import (
    SPANS_PER_WORKER_PART,
    Counts,
    Frame,
    Rotation,
    SpanLink,
    SpanPlace,
    TraceLayout,
)

#: Where a hit came from (the ``tier`` label and field).
TIER_MEMORY = "memory"
TIER_DISK = "disk"
#: Texts of recently failed prompts kept (in memory only) to redact error messages.
_FAILED_PROMPTS_KEPT = 64

#: What backends may report (:meth:`CallRecorder.report`): counts added, levels set.
REPORTED_COUNTS = frozenset(
    {"oom_splits", "model_invocations", "prefix_hits", "prefix_evictions", "worker_failures"}
)
REPORTED_LEVELS = frozenset({"prefix_entries", "prefix_bytes"})


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


def _ids(place: SpanPlace | None) -> tuple[str | None, str | None]:
    if place is None or not place.sampled:
        return None, None
    return place.trace_id, place.span_id


class CurrentScope(Protocol):
    """Where the caller's scope and the default run id are read from."""

    default_run_id: str

    def current(self) -> Scope: ...


class RecordOwner(Protocol):
    """What a recorder reads of the instrumentation that owns it."""

    cache: ForwardCache
    stats: BackendStats
    capture_prompts: bool
    model_name: str


class CallRecorder:
    """Counts hits and model calls of one instrumentation, places their spans, emits their
    events. One lock guards every counter and the trace layout."""

    def __init__(
        self,
        owner: RecordOwner,
        hasher: PromptHasher,
        exporters: ExporterSet,
        layout: TraceLayout,
    ) -> None:
        self._owner = owner
        self._hasher = hasher
        self._keyed = hasher.keyed
        self._exporters = exporters
        self.layout = layout
        self._scopes: CurrentScope | None = None
        self.lock = threading.Lock()
        self._redact_lock = threading.Lock()
        self._failed_prompts: deque[str] = deque(maxlen=_FAILED_PROMPTS_KEPT)
        self._kinds: dict[str, str] = {}
        self._pool_workers = 0

    def bind_scopes(self, scopes: CurrentScope) -> None:
        self._scopes = scopes

    def _scope(self) -> Scope:
        scopes = self._scopes
        return scopes.current() if scopes is not None else NO_SCOPE

    def _run_id(self, scope: Scope) -> str:
        run = scope.run
        if run is not None:
            return run.handle.run_id
        return self._scopes.default_run_id if self._scopes is not None else ""

    def _emit_rotations(self, run_id: str, rotations: list[Rotation]) -> None:
        if rotations and self._exporters:
            self._exporters.emit(TraceRotated(run_id, time.time_ns(), tuple(rotations)))

    # -- the layout's side of scopes (called by :class:`.scopes.Scopes`) -------------------

    def scope_root(
        self, sweep: SpanPlace | None, links: tuple[SpanLink, ...] = ()
    ) -> tuple[SpanPlace | None, SpanPlace | None]:
        with self.lock:
            return self.layout.run_root(sweep, links)

    def open_frame(
        self, kind: str, name: str, run_id: str, parent: Frame | None
    ) -> tuple[Frame, list[Rotation]]:
        assert kind in ("probe", "view")
        with self.lock:
            return self.layout.open(kind, name, run_id, parent)  # type: ignore[arg-type]

    def close_frame(self, frame: Frame) -> tuple[SpanPlace | None, Counts]:
        with self.lock:
            counts = Counts(frame.hits, frame.misses, frame.calls)
            place = frame.place
            self.layout.close(frame)
            return place, counts

    # -- backends' reports -------------------------------------------------------------------

    def report(self, counts: dict[str, int]) -> None:
        """Add what a backend did to the counters (and the current run's); levels (the
        prefix store's size) are set, not added."""
        unknown = set(counts) - REPORTED_COUNTS - REPORTED_LEVELS
        if unknown:
            raise ValueError(f"unknown backend counters {sorted(unknown)}")
        run = self._scope().run
        with self.lock:
            targets = (self._owner.stats,) if run is None else (self._owner.stats, run.stats)
            for stats in targets:
                for name, n in counts.items():
                    if name in REPORTED_LEVELS:
                        setattr(stats, name, n)
                    else:
                        setattr(stats, name, getattr(stats, name) + n)

    def pool_started(self, workers: int) -> None:
        """A pool of ``workers`` computes forward calls: their spans need room in a trace."""
        self._pool_workers = workers

    # -- errors ------------------------------------------------------------------------------

    def redact(self, message: str) -> str:
        """``message`` without the text of any prompt whose computation recently failed
        (unless prompts are captured): for errors that leave the process."""
        if self._owner.capture_prompts or not self._failed_prompts:
            return message
        with self._redact_lock:
            texts = list(self._failed_prompts)
        return redact_texts(message, texts, self._hasher)

    def _error_text(self, exc: BaseException, prompts: Sequence[str]) -> str:
        if not self._owner.capture_prompts:
            with self._redact_lock:
                self._failed_prompts.extend(prompts)
        return self.redact(f"{type(exc).__name__}: {exc}")

    # -- hits ----------------------------------------------------------------------------------

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
        tier: str = TIER_MEMORY,
    ) -> None:
        """Count one cache hit (``tier``: where it came from); emit its CacheLookup when
        anyone listens."""
        # The hot path (every hit): attributes read once, nothing made that is not needed.
        owner = self._owner
        scope = self._scope()
        frame, run = scope.frame, scope.run
        place: SpanPlace | None = None
        rotations: list[Rotation] = []
        disk = tier == TIER_DISK
        with self.lock:
            stats = owner.stats
            stats.cache_hits += 1
            stats.scoring_wall_s += wall
            if run is not None:
                own = run.stats
                own.cache_hits += 1
                own.scoring_wall_s += wall
            if disk:
                stats.disk_hits += 1
                if run is not None:
                    run.stats.disk_hits += 1
            if self.layout.hit_spans:  # placed first: a rotation ends the chunk before this hit
                place, rotations, _ = self.layout.leaf(frame)
            if frame is not None:
                frame.hits += 1
                frame.disk_hits += disk
        exporters = self._exporters
        if not exporters:
            return
        if rotations:
            self._emit_rotations(self._run_id(scope), rotations)
        pointer = place or (frame.place if frame is not None else None)
        trace_id, span_id = (
            (pointer.trace_id, pointer.span_id) if pointer is not None and pointer.sampled
            else (None, None)
        )
        run_id = run.handle.run_id if run is not None else self._run_id(scope)
        # Positional on purpose: keywords cost more, and this runs on every hit. Fields are
        # only ever added at the end (the event contract).
        exporters.emit(
            CacheLookup(
                run_id, op, view_id, self._view_kind(view_id), scope.probe,
                self._hasher(prompt) if self._keyed else digest.hex()[:PROMPT_HASH_CHARS],
                top_k, True, time.time_ns() - int(wall * 1e9), wall, batch_id, batch_size,
                None, None, None, prompt if owner.capture_prompts else None, trace_id, span_id,
                place, tier,
            )
        )

    def _view_kind(self, view_id: str) -> str:
        kind = self._kinds.get(view_id)
        if kind is None:
            kind = self._kinds[view_id] = view_kind_of(view_id)
        return kind

    # -- model calls -----------------------------------------------------------------------

    def _place_call(
        self, frame: Frame | None, remote: bool, batch_size: int
    ) -> tuple[SpanPlace | None, list[Rotation], int]:
        """The call's span place (room for its workers' spans when it runs remotely: two per
        worker part it can reach, and one retried part). Under the lock."""
        spans = 1
        if remote and self._pool_workers:
            spans += SPANS_PER_WORKER_PART * (min(batch_size, self._pool_workers) + 1)
        return self.layout.leaf(frame, spans)

    def start_call(
        self, op: str, view_id: str, top_k: int, batch_size: int, start_ns: int
    ) -> CallContext:
        """A forward call about to be computed elsewhere: its context (batch id, the
        ``traceparent`` of its span, room for its workers' spans), announced when anyone
        listens."""
        batch_id = _new_batch_id()
        scope = self._scope()
        with self.lock:
            place, rotations, granted = self._place_call(scope.frame, True, batch_size)
        trace_id, span_id = _ids(place)
        parent = TraceParent(trace_id, span_id) if trace_id and span_id else None
        context = CallContext(batch_id, parent, place=place, room=granted - 1)
        exporters = self._exporters
        if exporters:
            run_id = self._run_id(scope)
            self._emit_rotations(run_id, rotations)
            exporters.emit(
                ForwardStarted(
                    run_id=run_id,
                    op=op,
                    view_id=view_id,
                    view_kind=self._view_kind(view_id),
                    probe=scope.probe,
                    top_k=top_k,
                    batch_id=batch_id,
                    batch_size=batch_size,
                    start_ns=start_ns,
                    model=self._owner.model_name,
                    trace_id=trace_id,
                    span_id=span_id,
                    place=place,
                )
            )
        return context

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
        generated = _total(values, "n_generated")
        kind = self._view_kind(view_id)
        base = kind == "base"
        scope = self._scope()
        run, frame = scope.run, scope.frame
        rotations: list[Rotation] = []
        with self.lock:
            for s in (owner.stats,) if run is None else (owner.stats, run.stats):
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
                    s.tokens_generated += generated or 0
                    if batched:
                        s.batches_sent += 1
                        s.batched_prompts += n
                        s.max_batch_size = max(s.max_batch_size, n)
                s.cache_evictions = owner.cache.evictions
            if run is not None and exc is None and batched:
                run.max_batch = max(run.max_batch, n)
            if context is not None:
                place = context.place
            else:  # placed first: a rotation ends the chunk before this call
                place, rotations, _ = self._place_call(frame, False, n)
            if frame is not None:
                frame.misses += n
                frame.calls += 1
        error = self._error_text(exc, prompts) if exc is not None else None
        batch_id = context.batch_id if context is not None else _new_batch_id()
        exporters = self._exporters
        remote_spans = tuple(context.spans) if context is not None else ()
        if context is not None and len(remote_spans) > context.room:
            exporters.health.record_spans_dropped(len(remote_spans) - context.room)
            remote_spans = remote_spans[: context.room]
        if not exporters:
            return batch_id
        run_id = self._run_id(scope)
        self._emit_rotations(run_id, rotations)
        trace_id, span_id = _ids(place)
        hashes = [self._hasher(p, d) for p, d in zip(prompts, digests, strict=True)]
        exporters.emit(
            ForwardCall(
                run_id=run_id,
                op=op,
                view_id=view_id,
                view_kind=kind,
                probe=scope.probe,
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
                trace_id=trace_id,
                span_id=span_id,
                prompts=prompts if owner.capture_prompts else None,
                remote_spans=remote_spans,
                call_events=tuple(context.events) if context is not None else (),
                place=place,
                n_tokens_generated=generated,
            )
        )
        share = wall / n if n else 0.0
        probe = scope.probe
        for i, phash in enumerate(hashes):
            exporters.emit(
                CacheLookup(
                    run_id, op, view_id, kind, probe, phash, top_k, False, start_ns, share,
                    batch_id, n, wall, tokens[i], error,
                    prompts[i] if owner.capture_prompts else None, trace_id, span_id,
                )
            )
        return batch_id


__all__ = [
    "REPORTED_COUNTS", "REPORTED_LEVELS", "TIER_DISK", "TIER_MEMORY", "CallRecorder",
    "CurrentScope", "RecordOwner",
]
