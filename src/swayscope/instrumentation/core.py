"""BackendInstrumentation: the one cache, the stats and the event source every backend owns.

Every scoring method of every backend view is three lines of glue::

    def next_token_dist(self, prompt, *, top_k=256):
        return self._inst.cached(
            "next_token_dist", self.id, prompt, top_k,
            lambda: self._compute_next_token_dist(prompt, top_k=top_k),
        )

The core turns each lookup into events (:mod:`.events`) and hands them to its
exporters (:mod:`.exporter`); it knows nothing about any exporter's library.
"""

from __future__ import annotations

import operator
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from swayscope.errors import BackendError, InputError, shown
from swayscope.instrumentation.cache import _MISS, ForwardCache
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
    view_kind_of,
)
from swayscope.instrumentation.exporter import Exporter, ExporterSet, TelemetryHealth
from swayscope.instrumentation.hashing import PromptHasher, cache_digest, prompt_hash
from swayscope.instrumentation.redaction import redact_texts
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.vocabulary import PROBE_STATUSES, ProbeOutcome, ProbeStatus

T = TypeVar("T")

#: One of "next_token_dist" | "rolling_logprob" | "logprob_of" (v0 name, kept).
CacheOp = str

#: Splits a batch's miss indices into groups, each sent as one model call.
BatchPlanner = Callable[[list[int]], list[list[int]]]


@dataclass(slots=True)
class ProbeHandle:
    """What ``with inst.probe(...) as p`` yields: the runner sets the outcome on it."""

    name: str
    kind: str
    status: ProbeStatus | None = None
    verdict: str = ""
    score: float | None = None
    error: str | None = None


@dataclass(slots=True)
class RunHandle:
    """What ``with inst.run(...) as r`` yields; ``status`` may be set to ``interrupted``."""

    run_id: str
    status: str = "ok"
    probes_done: int = 0
    total_probes: int = 0
    start_ns: int = 0


@dataclass(slots=True)
class _Flight:
    """A compute in progress that concurrent callers of the same key wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    value: Any = None
    owner: int = field(default_factory=threading.get_ident)


#: Texts of recently failed prompts kept (in memory only) to redact error messages.
_FAILED_PROMPTS_KEPT = 64


def _new_batch_id() -> str:
    return os.urandom(8).hex()


def _n_tokens(value: Any) -> int | None:
    n = getattr(value, "n_tokens", None)
    return n if isinstance(n, int) else None


class BackendInstrumentation:
    """What a backend instance owns: one cache, one stats record, one exporter list.

    ``exporters`` receive every event. ``model_id`` (e.g. base path + adapter
    hash) joins the cache key so two models sharing an instrumentation never
    share entries. Prompt text is never put on events unless
    ``capture_prompts`` is true. The v0 ``trace_path``/``trace`` (a JSONL
    writer) live in :mod:`swayscope.instrumentation.v0`, which the package
    exports under this same name.
    """

    def __init__(
        self,
        *,
        cache_maxsize: int = 256,
        cache_max_bytes: int | None = None,
        exporters: Sequence[Exporter] = (),
        capture_prompts: bool = False,
        run_id: str | None = None,
        model_name: str = "",
        model_id: str | None = None,
        prompt_hash_key: bytes | str | None = None,
    ) -> None:
        self.cache = ForwardCache(maxsize=cache_maxsize, max_bytes=cache_max_bytes)
        self._hasher = PromptHasher(prompt_hash_key)
        self._failed_prompts: deque[str] = deque(maxlen=_FAILED_PROMPTS_KEPT)
        self.stats = BackendStats()
        self.health = TelemetryHealth()
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self.capture_prompts = capture_prompts
        self.model_name = model_name
        self.model_id = model_id
        self._exporters = ExporterSet(self.health, exporters)
        self._current_probe: str | None = None
        self._stats_lock = threading.Lock()
        self._inflight: dict[tuple[Any, ...], _Flight] = {}
        self._inflight_lock = threading.Lock()
        self._run: RunHandle | None = None
        self._closed = False

    # -- exporters -------------------------------------------------------------------

    @property
    def exporters(self) -> list[Exporter]:
        return list(self._exporters)

    def add_exporter(self, exporter: Exporter) -> None:
        self._exporters.add(exporter)

    def remove_exporter(self, exporter: Exporter) -> None:
        """Stop sending events to ``exporter`` (it is not shut down)."""
        self._exporters.remove(exporter)

    def emit(self, event: Event) -> None:
        """Hand one event to every exporter; failures are counted, never raised."""
        if self._exporters:
            self._exporters.emit(event)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return self._exporters.force_flush(timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush and shut down every exporter. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._exporters.shutdown()

    # -- context: run, probe, view --------------------------------------------------------

    @property
    def current_probe(self) -> str | None:
        return self._current_probe

    def set_current_probe(self, name: str | None) -> None:
        """Label for subsequent events (v0 API); ``probe()`` is the scoped form."""
        self._current_probe = name

    @contextmanager
    def run(
        self,
        *,
        suite: str = "",
        base_model: str = "",
        adapter: str = "",
        total_probes: int = 0,
        run_id: str | None = None,
        version: str = "",
        probes: Sequence[str] = (),
    ) -> Iterator[RunHandle]:
        """Scope one suite run; events inside carry its ``run_id``. Flushes exporters at the end."""
        if run_id is not None:
            self.run_id = run_id
        handle = RunHandle(
            run_id=self.run_id, total_probes=total_probes or len(probes), start_ns=time.time_ns()
        )
        self._run = handle
        t0 = time.perf_counter()
        self.emit(
            RunStarted(
                run_id=self.run_id,
                start_ns=handle.start_ns,
                suite=suite,
                base_model=base_model or self.model_name,
                adapter=adapter,
                total_probes=total_probes or len(probes),
                version=version,
                probes=tuple(probes),
            )
        )
        error: str | None = None
        try:
            yield handle
        except BaseException as exc:
            if handle.status == "ok":
                handle.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._run = None
            self.emit(
                RunEnded(
                    run_id=self.run_id,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=handle.status,
                    error=error,
                )
            )
            self.force_flush()

    @contextmanager
    def probe(self, name: str, kind: str | None = None) -> Iterator[ProbeHandle]:
        """Set the current probe for the block and restore the previous one after (nests)."""
        handle = ProbeHandle(name=name, kind=kind or name)
        previous = self._current_probe
        self._current_probe = name
        run = self._run
        index = run.probes_done if run is not None else 0
        total = run.total_probes if run is not None else 0
        t0 = time.perf_counter()
        self.emit(
            ProbeStarted(
                run_id=self.run_id,
                probe=name,
                kind=handle.kind,
                start_ns=time.time_ns(),
                index=index,
                total=total,
            )
        )
        interrupted = False
        try:
            yield handle
        except KeyboardInterrupt:
            interrupted = True
            raise
        except BaseException as exc:
            handle.status = "error"
            handle.error = handle.error or self.redact(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._current_probe = previous
            status: ProbeOutcome
            if interrupted:
                status = "not_run"  # stopped before a verdict: not a probe error
            else:
                if run is not None:
                    run.probes_done += 1
                status = handle.status if handle.status in PROBE_STATUSES else "pass"
            self.emit(
                ProbeEnded(
                    run_id=self.run_id,
                    probe=name,
                    kind=handle.kind,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=status,
                    verdict=handle.verdict,
                    score=handle.score,
                    error=handle.error,
                    done=run.probes_done if run is not None else 0,
                    total=total,
                )
            )

    @contextmanager
    def view(
        self,
        view_id: str,
        *,
        enter: Callable[[], None] | None = None,
        exit: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Scope a backend view. ``enter`` (the adapter switch) is timed as the switch cost;
        ``exit`` restores the model and always runs."""
        start_ns = time.time_ns()
        t0 = time.perf_counter()
        if enter is not None:
            enter()
        kind = view_kind_of(view_id)
        self.emit(
            ViewEntered(
                run_id=self.run_id,
                view_id=view_id,
                view_kind=kind,
                probe=self._current_probe,
                start_ns=start_ns,
                switch_s=time.perf_counter() - t0,
            )
        )
        try:
            yield
        finally:
            try:
                if exit is not None:
                    exit()
            finally:
                self.emit(
                    ViewExited(
                        run_id=self.run_id,
                        view_id=view_id,
                        view_kind=kind,
                        probe=self._current_probe,
                        end_ns=time.time_ns(),
                        duration_s=time.perf_counter() - t0,
                    )
                )

    # -- lookups ------------------------------------------------------------------------

    def hash_prompt(self, prompt: str) -> str:
        """The 12-hex hash telemetry carries for ``prompt`` (keyed when a key was given)."""
        return self._hasher(prompt)

    def redact(self, message: str) -> str:
        """``message`` without the text of any prompt whose computation recently failed
        (unless prompts are captured): for errors that leave the process."""
        if self.capture_prompts or not self._failed_prompts:
            return message
        with self._inflight_lock:
            texts = list(self._failed_prompts)
        return redact_texts(message, texts, self._hasher)

    def _error_text(self, exc: BaseException, prompts: Sequence[str]) -> str:
        if not self.capture_prompts:
            with self._inflight_lock:
                self._failed_prompts.extend(prompts)
        return self.redact(f"{type(exc).__name__}: {exc}")

    def _key(self, op: str, view_id: str, digest: bytes, top_k: int) -> tuple[Any, ...]:
        if self.model_id is None:
            return (op, view_id, digest, top_k)
        return (self.model_id, op, view_id, digest, top_k)

    def _count_hit(self, wall: float) -> None:
        with self._stats_lock:
            self.stats.cache_hits += 1
            self.stats.scoring_wall_s += wall

    def _hit_event(
        self,
        op: str,
        view_id: str,
        top_k: int,
        wall: float,
        prompt: str,
        digest: bytes,
        batch_id: str | None = None,
        batch_size: int | None = None,
    ) -> CacheLookup:
        return CacheLookup(
            run_id=self.run_id,
            op=op,
            view_id=view_id,
            view_kind=view_kind_of(view_id),
            probe=self._current_probe,
            prompt_hash=self._hasher(prompt, digest),
            top_k=top_k,
            hit=True,
            start_ns=time.time_ns() - int(wall * 1e9),
            duration_s=wall,
            batch_id=batch_id,
            batch_size=batch_size,
            prompt=prompt if self.capture_prompts else None,
        )

    def cached(
        self,
        op: CacheOp,
        view_id: str,
        prompt: str,
        top_k: int,
        compute: Callable[[], T],
        *,
        key_op: str | None = None,
        key_top_k: int | None = None,
    ) -> T:
        """Return the cached value for ``(op, view_id, prompt, top_k)`` or compute and store it.

        ``key_op``/``key_top_k`` let several ops share one cache entry (a backend
        that answers every op from one forward record caches it once). Concurrent
        callers of the same missing key wait for one compute and count as hits.
        A ``compute`` that raises stores nothing, is counted, and re-raises.
        """
        top_k = _check_top_k(top_k)
        _check_prompt(prompt, 0)
        digest = cache_digest(prompt)
        key = self._key(
            key_op or op, view_id, digest,
            top_k if key_top_k is None else _check_top_k(key_top_k),
        )
        t0 = time.perf_counter()
        value = self.cache.get(key)
        if value is not _MISS:
            wall = time.perf_counter() - t0
            self._count_hit(wall)
            if self._exporters:
                self._exporters.emit(self._hit_event(op, view_id, top_k, wall, prompt, digest))
            return value  # type: ignore[no-any-return]
        while True:
            with self._inflight_lock:
                value = self.cache.get(key)
                flight = self._inflight.get(key) if value is _MISS else None
                leader = value is _MISS and flight is None
                if leader:
                    flight = self._inflight[key] = _Flight()
            if leader:
                assert flight is not None
                try:
                    return self._compute_one(
                        op, view_id, top_k, prompt, digest, key, compute, flight
                    )
                finally:
                    with self._inflight_lock:
                        del self._inflight[key]
                    flight.done.set()
            if value is _MISS:
                assert flight is not None
                if flight.owner == threading.get_ident():
                    # A compute looking up the very key it is computing (re-entrant,
                    # same thread): waiting would deadlock. Compute here, as v0 did.
                    return self._compute_one(
                        op, view_id, top_k, prompt, digest, key, compute, _Flight()
                    )
                flight.done.wait()
                if not flight.ok:
                    continue  # the leader failed: this caller computes
                value = flight.value
            wall = time.perf_counter() - t0
            self._count_hit(wall)
            if self._exporters:
                self._exporters.emit(self._hit_event(op, view_id, top_k, wall, prompt, digest))
            return value  # type: ignore[no-any-return]

    def _compute_one(
        self,
        op: str,
        view_id: str,
        top_k: int,
        prompt: str,
        digest: bytes,
        key: tuple[Any, ...],
        compute: Callable[[], T],
        flight: _Flight,
    ) -> T:
        start_ns = time.time_ns()
        t0 = time.perf_counter()
        try:
            value = compute()
        except BaseException as exc:
            self._record_forward(
                op, view_id, top_k, [prompt], [digest], [], start_ns, time.perf_counter() - t0,
                0, batched=False, exc=exc,
            )
            raise
        wall = time.perf_counter() - t0
        self.cache.put(key, value)
        flight.value = value
        flight.ok = True
        self._record_forward(
            op, view_id, top_k, [prompt], [digest], [value], start_ns, wall, 0, batched=False
        )
        return value

    def cached_batch(
        self,
        op: CacheOp,
        view_id: str,
        prompts: Sequence[str],
        top_k: int,
        compute_misses: Callable[[list[int]], list[Any]],
        *,
        key_op: str | None = None,
        key_top_k: int | None = None,
        plan: BatchPlanner | None = None,
    ) -> list[Any]:
        """Batched :meth:`cached`: look every prompt up, send only the misses to the model.

        ``compute_misses(indices)`` gets indices into ``prompts`` and returns one
        value per index, in order. Identical prompts are computed once (the
        repeats count as hits). ``plan`` may split the misses into several model
        calls (a token budget); each group is one forward call.
        """
        top_k = _check_top_k(top_k)
        for i, prompt in enumerate(prompts):
            _check_prompt(prompt, i)
        results: list[Any] = [None] * len(prompts)
        digests = [cache_digest(p) for p in prompts]
        kop = key_op or op
        ktop = top_k if key_top_k is None else _check_top_k(key_top_k)
        first_miss: dict[bytes, int] = {}
        repeats: list[tuple[int, int]] = []
        hits = 0
        for i, digest in enumerate(digests):
            if digest in first_miss:
                repeats.append((i, first_miss[digest]))
                continue
            t0 = time.perf_counter()
            value = self.cache.get(self._key(kop, view_id, digest, ktop))
            if value is _MISS:
                first_miss[digest] = i
                continue
            wall = time.perf_counter() - t0
            hits += 1
            results[i] = value
            self._count_hit(wall)
            if self._exporters:
                self._exporters.emit(
                    self._hit_event(op, view_id, top_k, wall, prompts[i], digest)
                )
        misses = list(first_miss.values())
        groups = (plan(misses) if plan is not None else [misses]) if misses else []
        if sorted(i for g in groups for i in g) != misses:
            raise BackendError(
                f"batch plan returned groups covering {sum(len(g) for g in groups)} indices "
                f"for {len(misses)} misses; a plan must partition the miss indices "
                "(a backend bug: report it to the backend's authors)"
            )
        batch_ids: dict[int, tuple[str, int]] = {}
        for group in groups:
            if not group:
                continue
            start_ns = time.time_ns()
            t0 = time.perf_counter()
            try:
                values = compute_misses(group)
                if len(values) != len(group):
                    raise BackendError(
                        f"batched compute returned {len(values)} values for "
                        f"{len(group)} misses; the backend must return one value per miss "
                        "(a backend bug: report it to the backend's authors)"
                    )
            except BaseException as exc:
                self._record_forward(
                    op, view_id, top_k, [prompts[i] for i in group],
                    [digests[i] for i in group], [], start_ns, time.perf_counter() - t0, hits,
                    batched=True, exc=exc,
                )
                raise
            wall = time.perf_counter() - t0
            for i, value in zip(group, values, strict=True):
                self.cache.put(self._key(kop, view_id, digests[i], ktop), value)
                results[i] = value
            batch_id = self._record_forward(
                op, view_id, top_k, [prompts[i] for i in group], [digests[i] for i in group],
                values, start_ns, wall, hits, batched=True,
            )
            for i in group:
                batch_ids[i] = (batch_id, len(group))
            hits = 0
        for i, j in repeats:
            results[i] = results[j]
            self._count_hit(0.0)
            if self._exporters:
                bid, bsize = batch_ids.get(j, (None, None))
                self._exporters.emit(
                    self._hit_event(op, view_id, top_k, 0.0, prompts[i], digests[i], bid, bsize)
                )
        return results

    def _record_forward(
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
    ) -> str:
        """Count one model call and emit its ForwardCall and per-prompt miss events."""
        n = len(prompts)
        tokens = [_n_tokens(v) for v in values] if exc is None else [None] * n
        known = [t for t in tokens if t is not None]
        n_tokens = sum(known) if known else None
        with self._stats_lock:
            s = self.stats
            s.cache_misses += n
            s.forward_calls += 1
            s.scoring_wall_s += wall
            if exc is not None:
                s.compute_errors += 1
            else:
                s.forward_passes += n
                s.n_tokens += n_tokens or 0
                if batched:
                    s.batches_sent += 1
                    s.batched_prompts += n
                    s.max_batch_size = max(s.max_batch_size, n)
            s.cache_evictions = self.cache.evictions
        error = self._error_text(exc, prompts) if exc is not None else None
        batch_id = _new_batch_id()
        if not self._exporters:
            return batch_id
        kind = view_kind_of(view_id)
        hashes = [self._hasher(p, d) for p, d in zip(prompts, digests, strict=True)]
        call = ForwardCall(
            run_id=self.run_id,
            op=op,
            view_id=view_id,
            view_kind=kind,
            probe=self._current_probe,
            top_k=top_k,
            batch_id=batch_id,
            batch_size=n,
            cache_hits=hits,
            cache_misses=n,
            prompt_hashes=hashes,
            start_ns=start_ns,
            duration_s=wall,
            n_tokens=n_tokens,
            model=self.model_name,
            error=error,
            exception=exc,
            error_stack=self.redact(_stack(exc)) if exc is not None else None,
            cache_entries=len(self.cache),
            cache_bytes=self.cache.nbytes,
            cache_evictions=self.cache.evictions,
            prompts=prompts if self.capture_prompts else None,
        )
        self._exporters.emit(call)
        share = wall / n if n else 0.0
        for i, phash in enumerate(hashes):
            self._exporters.emit(
                CacheLookup(
                    run_id=self.run_id,
                    op=op,
                    view_id=view_id,
                    view_kind=kind,
                    probe=self._current_probe,
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
                    prompt=prompts[i] if self.capture_prompts else None,
                    trace_id=call.trace_id,
                    span_id=call.span_id,
                )
            )
        return batch_id


def _check_top_k(top_k: object) -> int:
    """``top_k`` as a plain int (numpy integers accepted); InputError otherwise."""
    if isinstance(top_k, bool):
        raise InputError(f"top_k must be an integer; got the bool {top_k!r}")
    try:
        return operator.index(top_k)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(
            f"top_k must be an integer; got {type(top_k).__name__} {shown(top_k)}"
        ) from None


def _check_prompt(prompt: object, index: int) -> None:
    if not isinstance(prompt, str):
        raise InputError(
            f"prompt #{index} must be a string; got {type(prompt).__name__}"
        )


def _stack(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _prompt_hash(prompt: str) -> str:
    """v0 name for :func:`~swayscope.instrumentation.hashing.prompt_hash`."""
    return prompt_hash(prompt)


__all__ = [
    "BackendInstrumentation",
    "BatchPlanner",
    "CacheOp",
    "ProbeHandle",
    "RunHandle",
    "_prompt_hash",
]
