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

import functools
import operator
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from swayscope.errors import BackendError, InputError, shown
from swayscope.instrumentation.cache import _MISS, ForwardCache
from swayscope.instrumentation.calls import CallContext, CurrentCall
from swayscope.instrumentation.events import Event
from swayscope.instrumentation.exporter import Exporter, ExporterSet, TelemetryHealth
from swayscope.instrumentation.hashing import PromptHasher, cache_digest, prompt_hash
from swayscope.instrumentation.recording import CallRecorder
from swayscope.instrumentation.scopes import ProbeHandle, RunHandle, Scopes, SweepHandle
from swayscope.instrumentation.stats import BackendStats

T = TypeVar("T")

#: One of "next_token_dist" | "rolling_logprob" | "logprob_of" (v0 name, kept).
CacheOp = str

#: Splits a batch's miss indices into groups, each sent as one model call.
BatchPlanner = Callable[[list[int]], list[list[int]]]


@dataclass(slots=True)
class _Flight:
    """A compute in progress that concurrent callers of the same key wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    value: Any = None
    owner: int = field(default_factory=threading.get_ident)


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
        self.stats = BackendStats()
        self.health = TelemetryHealth()
        self.capture_prompts = capture_prompts
        self.model_name = model_name
        self.model_id = model_id
        self._exporters = ExporterSet(self.health, exporters)
        self._recorder = CallRecorder(self, self._hasher, self._exporters)
        self._scopes = Scopes(self, run_id or uuid.uuid4().hex[:16], self._recorder)
        self._recorder.bind_scopes(self._scopes)
        self._inflight: dict[tuple[Any, ...], _Flight] = {}
        self._inflight_lock = threading.Lock()
        self._current = CurrentCall()
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

    # -- context: run, probe, view (see :mod:`.scopes`) -------------------------------------

    @property
    def run_id(self) -> str:
        run_id: str = self._scopes.run_id
        return run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._scopes.run_id = value

    @property
    def current_probe(self) -> str | None:
        return self._scopes.current_probe

    def set_current_probe(self, name: str | None) -> None:
        """Label for subsequent events (v0 API); ``probe()`` is the scoped form."""
        self._scopes.set_current_probe(name)

    def sweep(
        self, sweep_id: str, *, adapters: Sequence[str], suite: str = "", base_model: str = ""
    ) -> AbstractContextManager[SweepHandle]:
        """Scope a checkpoint sweep: the runs inside carry its id; ``adapters`` are their
        labels, in checkpoint order. Flushes exporters at the end."""
        return self._scopes.sweep(sweep_id, adapters=adapters, suite=suite, base_model=base_model)

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
        threads: int | None = None,
    ) -> AbstractContextManager[RunHandle]:
        """Scope one suite run; events inside carry its ``run_id``. Flushes exporters at the end.

        Without ``run_id`` the first run keeps the instrumentation's id and every later run
        gets a new one. The handle's ``stats`` are the run's own counters once it ended.
        ``threads``: the CPU threads the backend computes with, for ``run_info``.
        """
        return self._scopes.run(
            suite=suite, base_model=base_model, adapter=adapter, total_probes=total_probes,
            run_id=run_id, version=version, probes=probes, threads=threads,
        )

    def probe(self, name: str, kind: str | None = None) -> AbstractContextManager[ProbeHandle]:
        """Set the current probe for the block and restore the previous one after (nests)."""
        return self._scopes.probe(name, kind)

    def view(
        self,
        view_id: str,
        *,
        enter: Callable[[], None] | None = None,
        exit: Callable[[], None] | None = None,
    ) -> AbstractContextManager[None]:
        """Scope a backend view. ``enter`` (the adapter switch) is timed as the switch cost;
        ``exit`` restores the model and always runs."""
        return self._scopes.view(view_id, enter=enter, exit=exit)

    # -- lookups ------------------------------------------------------------------------

    def hash_prompt(self, prompt: str) -> str:
        """The 12-hex hash telemetry carries for ``prompt`` (keyed when a key was given)."""
        return self._hasher(prompt)

    def redact(self, message: str) -> str:
        """``message`` without the text of any prompt whose computation recently failed
        (unless prompts are captured): for errors that leave the process."""
        return self._recorder.redact(message)

    def current_call(self) -> CallContext | None:
        """The forward call whose compute runs on this thread, when the compute was given
        ``propagate=True`` (see :mod:`.calls`): its ``traceparent`` goes out with the work,
        the workers' spans and events come back into it. None otherwise."""
        return self._current.call

    def _run_compute(self, compute: Callable[[], T], context: CallContext) -> T:
        """``compute()``, with ``context`` as this thread's current call while it runs."""
        outer, self._current.call = self._current.call, context
        try:
            return compute()
        finally:
            self._current.call = outer

    def _key(
        self,
        op: str,
        view_id: str,
        digest: bytes,
        top_k: int,
        model: str | None = None,
        params: tuple[Hashable, ...] = (),
    ) -> tuple[Any, ...]:
        model_id = model or self.model_id
        if model_id is None:
            return (op, view_id, digest, top_k, *params)
        return (model_id, op, view_id, digest, top_k, *params)

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
        usable: Callable[[Any], bool] | None = None,
        key_model: str | None = None,
        propagate: bool = False,
        key_params: tuple[Hashable, ...] = (),
    ) -> T:
        """Return the cached value for ``(op, view_id, prompt, top_k)`` or compute and store it.

        ``key_op``/``key_top_k`` let several ops share one cache entry (a backend
        that answers every op from one forward record caches it once). ``usable``
        says whether a stored value answers this request; one that does not (a
        record computed for a lighter op) is a miss, and its recomputation replaces
        it. ``key_model`` replaces ``model_id`` in the key for a view that depends on
        less of the model (the base view of a backend whose adapter changes: its
        entries are shared by every adapter). Concurrent callers of the same missing
        key wait for one compute and count as hits. A ``compute`` that raises stores
        nothing, is counted, and re-raises. ``propagate``: the compute runs elsewhere and
        takes the call's trace context along (:meth:`current_call`). ``key_params``: more
        of the request that changes the answer (``generate``'s token limit and stop
        strings), appended to the key.
        """
        top_k = _check_top_k(top_k)
        _check_prompt(prompt, 0)
        digest = cache_digest(prompt)
        key = self._key(
            key_op or op, view_id, digest,
            top_k if key_top_k is None else _check_top_k(key_top_k), key_model, key_params,
        )
        t0 = time.perf_counter()
        value = _usable(self.cache.get(key), usable)
        if value is not _MISS:
            wall = time.perf_counter() - t0
            self._recorder.hit(op, view_id, top_k, wall, prompt, digest)
            return value  # type: ignore[no-any-return]
        while True:
            with self._inflight_lock:
                value = _usable(self.cache.get(key), usable)
                flight = self._inflight.get(key) if value is _MISS else None
                leader = value is _MISS and flight is None
                if leader:
                    flight = self._inflight[key] = _Flight()
            if leader:
                assert flight is not None
                try:
                    return self._compute_one(
                        op, view_id, top_k, prompt, digest, key, compute, flight, propagate
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
                        op, view_id, top_k, prompt, digest, key, compute, _Flight(), propagate
                    )
                flight.done.wait()
                if not flight.ok or _usable(flight.value, usable) is _MISS:
                    continue  # the leader failed, or computed less than this caller needs
                value = flight.value
            wall = time.perf_counter() - t0
            self._recorder.hit(op, view_id, top_k, wall, prompt, digest)
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
        propagate: bool = False,
    ) -> T:
        start_ns = time.time_ns()
        t0 = time.perf_counter()
        context = (
            self._recorder.start_call(op, view_id, top_k, 1, start_ns) if propagate else None
        )
        try:
            value = compute() if context is None else self._run_compute(compute, context)
        except BaseException as exc:
            self._recorder.record_call(
                op, view_id, top_k, [prompt], [digest], [], start_ns, time.perf_counter() - t0,
                0, batched=False, exc=exc, context=context,
            )
            raise
        wall = time.perf_counter() - t0
        self.cache.put(key, value)
        flight.value = value
        flight.ok = True
        self._recorder.record_call(
            op, view_id, top_k, [prompt], [digest], [value], start_ns, wall, 0, batched=False,
            context=context,
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
        usable: Callable[[Any], bool] | None = None,
        key_model: str | None = None,
        propagate: bool = False,
        key_params: tuple[Hashable, ...] = (),
    ) -> list[Any]:
        """Batched :meth:`cached`: look every prompt up, send only the misses to the model.

        ``compute_misses(indices)`` gets indices into ``prompts`` and returns one
        value per index, in order. Identical prompts are computed once (the
        repeats count as hits). ``plan`` may split the misses into several model
        calls (a token budget); each group is one forward call. ``usable``,
        ``propagate`` and ``key_params`` as in :meth:`cached`.
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
            key = self._key(kop, view_id, digest, ktop, key_model, key_params)
            value = _usable(self.cache.get(key), usable)
            if value is _MISS:
                first_miss[digest] = i
                continue
            wall = time.perf_counter() - t0
            hits += 1
            results[i] = value
            self._recorder.hit(op, view_id, top_k, wall, prompts[i], digest)
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
            context = (
                self._recorder.start_call(op, view_id, top_k, len(group), start_ns)
                if propagate
                else None
            )
            try:
                if context is None:
                    values = compute_misses(group)
                else:
                    values = self._run_compute(functools.partial(compute_misses, group), context)
                if len(values) != len(group):
                    raise BackendError(
                        f"batched compute returned {len(values)} values for "
                        f"{len(group)} misses; the backend must return one value per miss "
                        "(a backend bug: report it to the backend's authors)"
                    )
            except BaseException as exc:
                self._recorder.record_call(
                    op, view_id, top_k, [prompts[i] for i in group],
                    [digests[i] for i in group], [], start_ns, time.perf_counter() - t0, hits,
                    batched=True, exc=exc, context=context,
                )
                raise
            wall = time.perf_counter() - t0
            for i, value in zip(group, values, strict=True):
                self.cache.put(
                    self._key(kop, view_id, digests[i], ktop, key_model, key_params), value
                )
                results[i] = value
            batch_id = self._recorder.record_call(
                op, view_id, top_k, [prompts[i] for i in group], [digests[i] for i in group],
                values, start_ns, wall, hits, batched=True, context=context,
            )
            for i in group:
                batch_ids[i] = (batch_id, len(group))
            hits = 0
        for i, j in repeats:
            results[i] = results[j]
            bid, bsize = batch_ids.get(j, (None, None))
            self._recorder.hit(op, view_id, top_k, 0.0, prompts[i], digests[i], bid, bsize)
        return results


def _usable(value: Any, usable: Callable[[Any], bool] | None) -> Any:
    """``value``, or ``_MISS`` when it is one or ``usable`` refuses it."""
    if value is _MISS or usable is None or usable(value):
        return value
    return _MISS


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




def _prompt_hash(prompt: str) -> str:
    """v0 name for :func:`~swayscope.instrumentation.hashing.prompt_hash`."""
    return prompt_hash(prompt)


__all__ = [
    "BackendInstrumentation",
    "BatchPlanner",
    "CacheOp",
    "ProbeHandle",
    "RunHandle",
    "SweepHandle",
    "_prompt_hash",
]
