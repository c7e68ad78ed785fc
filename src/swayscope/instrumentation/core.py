"""Instrumentation: the one cache, the stats and the event source every backend owns.

Every scoring method of every backend view is three lines of glue::

    def next_token_dist(self, prompt, *, top_k=256):
        return self._inst.cached(
            "next_token_dist", self.id, prompt, top_k,
            lambda: self._compute_next_token_dist(prompt, top_k=top_k),
        )

The core turns each lookup into events (:mod:`.events`) and hands them to its
exporters (:mod:`.exporter`); it knows nothing about any exporter's library. Events
flow one way: the core chooses every id an exporter needs (:mod:`.tracing`) and no
exporter writes into an event. Users build it as ``BackendInstrumentation``
(:mod:`.v0`: this core plus v0's JSONL ``trace``).
"""

from __future__ import annotations

import functools
import operator
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from swayscope.errors import BackendError, ConfigError, InputError, shown
from swayscope.instrumentation.cache import _MISS, ForwardCache
from swayscope.instrumentation.calls import CallContext, CurrentCall
from swayscope.instrumentation.disk_cache import DiskCache, DiskStats, key_digest
from swayscope.instrumentation.events import DiskCacheState, Event, WorkerPoolStarted
from swayscope.instrumentation.exporter import Exporter, ExporterSet, TelemetryHealth
from swayscope.instrumentation.flights import Flight, Flights, Key, usable_value
from swayscope.instrumentation.hashing import PromptHasher, cache_digest, prompt_hash
from swayscope.instrumentation.recording import TIER_DISK, CallRecorder
from swayscope.instrumentation.scopes import ProbeHandle, RunHandle, Scopes, SweepHandle
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.tracing import TraceLayout, TraceSettings

T = TypeVar("T")

#: One of "next_token_dist" | "rolling_logprob" | "logprob_of" (v0 name, kept).
CacheOp = str

#: Splits a batch's miss indices into groups, each sent as one model call.
BatchPlanner = Callable[[list[int]], list[list[int]]]


class Instrumentation:
    """What a backend instance owns: one cache, one stats record, one exporter list.

    ``exporters`` receive every event. ``model_id`` (e.g. base path + adapter
    hash) joins the cache key so two models sharing an instrumentation never
    share entries. Prompt text is never put on events unless
    ``capture_prompts`` is true. ``tracing``: how traces are laid out; by default
    the settings the first exporter that makes spans declares (none: no ids).
    ``disk_cache``: the durable tier under the memory cache (:mod:`.disk_cache`), used for
    the models a backend gave a content fingerprint (:meth:`fingerprint`).
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
        tracing: TraceSettings | None = None,
        disk_cache: DiskCache | None = None,
    ) -> None:
        self.cache = ForwardCache(maxsize=cache_maxsize, max_bytes=cache_max_bytes)
        self.disk = disk_cache
        self._fingerprints: dict[str, str] = {}
        self._hasher = PromptHasher(prompt_hash_key)
        self.stats = BackendStats()
        self.health = TelemetryHealth()
        self.capture_prompts = capture_prompts
        self.model_name = model_name
        self.model_id = model_id
        self._layout = TraceLayout(tracing)
        self._exporters = ExporterSet(self.health)
        self._recorder = CallRecorder(self, self._hasher, self._exporters, self._layout)
        self._scopes = Scopes(self, run_id or uuid.uuid4().hex[:16], self._recorder)
        self._recorder.bind_scopes(self._scopes)
        self._flights = Flights(self.cache)
        self._current = CurrentCall()
        self._closed = False
        for exporter in exporters:
            self.add_exporter(exporter)
        if disk_cache is not None:
            disk_cache.listener = self._disk_state
            self._disk_state(disk_cache.state)

    # -- exporters -------------------------------------------------------------------

    @property
    def exporters(self) -> list[Exporter]:
        return list(self._exporters)

    def add_exporter(self, exporter: Exporter) -> None:
        """Send every later event to ``exporter`` too. One that makes spans turns trace
        layout on with the settings it declares (``Exporter.trace_settings``)."""
        wanted = exporter.trace_settings
        if wanted is not None:
            current = self._layout.settings
            if current is None:
                self._layout.settings = wanted
            elif current != wanted:
                raise ConfigError(
                    f"exporter {exporter.name!r} asks for trace settings {wanted}, but traces "
                    f"are already laid out with {current}; give every tracing exporter the "
                    "same max_spans_per_trace, chunk_seconds, hit_spans and TRACEPARENT"
                )
        self._exporters.add(exporter)

    def remove_exporter(self, exporter: Exporter) -> None:
        """Stop sending events to ``exporter`` (it is not shut down)."""
        self._exporters.remove(exporter)

    @property
    def tracing(self) -> TraceSettings | None:
        """How traces are laid out (None: no exporter makes spans, events carry no ids)."""
        return self._layout.settings

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
        """Write what the disk cache holds back (bounded), flush and shut down every
        exporter. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.disk is not None:
                self.disk.close()
        finally:
            self._exporters.shutdown()

    # -- the durable tier ------------------------------------------------------------------

    def fingerprint(self, model: str, content: str) -> None:
        """``model`` (a ``model_id`` or ``key_model`` the backend keys entries by) is the
        model state whose content digest is ``content`` (weights, tokenizer, adapter,
        dtype, device kind): its entries may be kept in and read from the disk cache."""
        self._fingerprints[model] = content

    def fingerprint_of(self, model: str | None = None) -> str | None:
        """The content fingerprint given for ``model`` (default: ``model_id``), or None."""
        key = model or self.model_id
        return self._fingerprints.get(key) if key is not None else None

    def flush_disk(self, timeout_s: float = 10.0) -> bool:
        """Write what the disk cache holds back now; True when it is on disk in time."""
        return self.disk.flush(timeout_s) if self.disk is not None else True

    def _disk_state(self, s: DiskStats) -> None:
        self.emit(DiskCacheState(
            s.entries, s.nbytes, s.evictions, s.written, s.write_failures, s.enabled
        ))

    def _disk_key(
        self, op: str, view_id: str, digest: bytes, top_k: int, model: str | None,
        params: tuple[Hashable, ...],
    ) -> bytes | None:
        """The disk key of a lookup whose model has a content fingerprint (else None)."""
        if self.disk is None:
            return None
        model_id = model or self.model_id
        content = self._fingerprints.get(model_id) if model_id is not None else None
        if content is None:
            return None
        return key_digest((content, op, view_id, digest, top_k, *params))

    def _from_disk(self, keys: dict[int, bytes], usable: Callable[[Any], bool] | None) -> (
        dict[int, Any]
    ):
        """The values the disk holds for ``keys`` (index → disk key), in one query."""
        if not keys or self.disk is None:
            return {}
        found = self.disk.get_many(list(keys.values()))
        out = {}
        for i, dkey in keys.items():
            value = usable_value(found.get(dkey, _MISS), usable)
            if value is not _MISS:
                out[i] = value
        return out

    # -- what backends report ------------------------------------------------------------

    def report(self, **counts: int) -> None:
        """Count what a backend did beyond lookups and calls (``oom_splits``,
        ``model_invocations``, ``prefix_hits``, ``prefix_evictions``, ``worker_failures``:
        added; ``prefix_entries``, ``prefix_bytes``: the store's size now). The core is
        the one writer of :attr:`stats` and of the current run's counters."""
        self._recorder.report(counts)

    def start_pool(self, workers: Sequence[str], address: str) -> None:
        """A pool of workers (labels ``workers``) computes this instrumentation's forward
        calls: announced, and room made in traces for their spans."""
        self._recorder.pool_started(len(workers))
        self.emit(WorkerPoolStarted(tuple(workers), address, time.time_ns()))

    # -- context: sweep, run, probe, view (see :mod:`.scopes`) ----------------------------

    @property
    def run_id(self) -> str:
        """The current context's run id, or the instrumentation's outside any run."""
        return self._scopes.run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._scopes.default_run_id = value

    @property
    def current_probe(self) -> str | None:
        return self._scopes.current_probe

    def set_current_probe(self, name: str | None) -> None:
        """Label for subsequent events of this context (v0 API); ``probe()`` is the
        scoped form."""
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
        resumed_from: str | None = None,
        resumed_span: tuple[str, str] | None = None,
    ) -> AbstractContextManager[RunHandle]:
        """Scope one suite run in this context; events inside carry its ``run_id``. Flushes
        exporters at the end. Several runs may be live at once, each in its own context
        (a thread): each keeps its own id, trace and counters.

        Without ``run_id`` the first run keeps the instrumentation's id and every later run
        gets a new one. The handle's ``stats`` are the run's own counters once it ended.
        ``threads``: the CPU threads the backend computes with, for ``run_info``.
        ``resumed_from``: the id of the run this one resumes (``resumed_span``: that run's
        root, trace and span id, which this run's root links to).
        """
        return self._scopes.run(
            suite=suite, base_model=base_model, adapter=adapter, total_probes=total_probes,
            run_id=run_id, version=version, probes=probes, threads=threads,
            resumed_from=resumed_from, resumed_span=resumed_span,
        )

    def run_stats(self) -> BackendStats | None:
        """The current context's run's counters so far (None outside a run)."""
        run = self._scopes.current().run
        if run is None:
            return None
        with self._recorder.lock:
            return self._scopes.run_stats(run)

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
        key: tuple[Any, ...] = (op, view_id, digest, top_k)
        if model_id is not None:
            key = (model_id, *key)
        return key + params if params else key

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
        key_params: tuple[Hashable, ...] = (),
        propagate: bool = False,
    ) -> T:
        """Return the cached value for ``(op, view_id, prompt, top_k)`` or compute and store it.

        ``key_op``/``key_top_k`` let several ops share one cache entry (a backend
        that answers every op from one forward record caches it once). ``usable``
        says whether a stored value answers this request; one that does not (a
        record computed for a lighter op) is a miss, and its recomputation replaces
        it. ``key_model`` replaces ``model_id`` in the key for a view that depends on
        less of the model (the base view of a backend whose adapter changes: its
        entries are shared by every adapter). ``key_params``: more of the request that
        decides the value (a generation's length and stop strings). Concurrent callers
        of the same missing key wait for one compute and count as hits. A ``compute``
        that raises stores nothing, is counted, and re-raises. ``propagate``: the compute
        runs elsewhere and takes the call's trace context along (:meth:`current_call`).
        """
        top_k = _check_top_k(top_k)
        _check_prompt(prompt, 0)
        digest = cache_digest(prompt)
        kop, ktop = key_op or op, top_k if key_top_k is None else _check_top_k(key_top_k)
        key = self._key(kop, view_id, digest, ktop, key_model, key_params)
        t0 = time.perf_counter()
        value = usable_value(self.cache.get(key), usable)
        if value is not _MISS:
            wall = time.perf_counter() - t0
            self._recorder.hit(op, view_id, top_k, wall, prompt, digest)
            return value  # type: ignore[no-any-return]
        dkey = self._disk_key(kop, view_id, digest, ktop, key_model, key_params)
        if dkey is not None:
            stored = self._from_disk({0: dkey}, usable)
            if stored:
                self.cache.put(key, stored[0])
                wall = time.perf_counter() - t0
                self._recorder.hit(op, view_id, top_k, wall, prompt, digest, tier=TIER_DISK)
                return stored[0]  # type: ignore[no-any-return]
        while True:
            value, flight, leader = self._flights.claim_one(key, usable)
            if leader:
                assert flight is not None
                try:
                    return self._compute_one(
                        op, view_id, top_k, prompt, digest, key, compute, flight, propagate,
                        dkey,
                    )
                finally:
                    self._flights.land([(key, flight)])
            if flight is not None:
                if flight.owner == threading.get_ident():
                    # A compute looking up the very key it is computing (re-entrant,
                    # same thread): waiting would deadlock. Compute here, as v0 did.
                    return self._compute_one(
                        op, view_id, top_k, prompt, digest, key, compute, Flight(), propagate
                    )
                flight.done.wait()
                if not flight.ok or usable_value(flight.value, usable) is _MISS:
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
        flight: Flight,
        propagate: bool = False,
        dkey: bytes | None = None,
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
        if dkey is not None and self.disk is not None:
            self.disk.put(dkey, value)
        flight.finish(value)
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
        key_params: tuple[Hashable, ...] = (),
        propagate: bool = False,
    ) -> list[Any]:
        """Batched :meth:`cached`: look every prompt up, send only the misses to the model.

        ``compute_misses(indices)`` gets indices into ``prompts`` and returns one
        value per index, in order. Identical prompts are computed once (the
        repeats count as hits). ``plan`` may split the misses into several model
        calls (a token budget); each group is one forward call. A key another caller
        is computing right now is waited for, not computed again (it counts as a hit).
        ``usable``, ``key_params`` and ``propagate`` as in :meth:`cached`.
        """
        top_k = _check_top_k(top_k)
        for i, prompt in enumerate(prompts):
            _check_prompt(prompt, i)
        digests = [cache_digest(p) for p in prompts]
        ktop = top_k if key_top_k is None else _check_top_k(key_top_k)
        kop = key_op or op

        def key_of(i: int) -> tuple[Any, ...]:
            return self._key(kop, view_id, digests[i], ktop, key_model, key_params)

        def disk_key_of(i: int) -> bytes | None:
            return self._disk_key(kop, view_id, digests[i], ktop, key_model, key_params)

        return self._batch(
            _Batch(
                op, view_id, top_k, list(prompts), digests, key_of, disk_key_of, usable,
                propagate,
            ),
            list(range(len(prompts))), compute_misses, plan,
        )

    def _batch(
        self,
        batch: _Batch,
        indices: list[int],
        compute_misses: Callable[[list[int]], list[Any]],
        plan: BatchPlanner | None,
    ) -> list[Any]:
        """Look ``indices`` of ``batch`` up; compute what nobody has or is computing;
        wait for the rest. Values in ``indices`` order."""
        prompts, digests, usable = batch.prompts, batch.digests, batch.usable
        op, view_id, top_k = batch.op, batch.view_id, batch.top_k
        results: dict[int, Any] = {}
        first_miss: dict[bytes, int] = {}
        repeats: list[tuple[int, int]] = []
        hits = 0
        for i in indices:
            digest = digests[i]
            if digest in first_miss:
                repeats.append((i, first_miss[digest]))
                continue
            t0 = time.perf_counter()
            value = usable_value(self.cache.get(batch.key_of(i)), usable)
            if value is _MISS:
                first_miss[digest] = i
                continue
            hits += 1
            results[i] = value
            self._recorder.hit(op, view_id, top_k, time.perf_counter() - t0, prompts[i], digest)
        if first_miss and self.disk is not None:
            t0 = time.perf_counter()
            dkeys = {i: dk for i in first_miss.values() if (dk := batch.disk_key_of(i))}
            stored = self._from_disk(dkeys, usable)  # one query for every miss
            wall = (time.perf_counter() - t0) / max(1, len(dkeys))
            for digest, i in list(first_miss.items()):
                if i in stored:
                    del first_miss[digest]
                    self.cache.put(batch.key_of(i), stored[i])
                    results[i] = stored[i]
                    hits += 1
                    self._recorder.hit(
                        op, view_id, top_k, wall, prompts[i], digest, tier=TIER_DISK
                    )
        claim = self._flights.claim([(i, batch.key_of(i)) for i in first_miss.values()], usable)
        now = time.perf_counter()
        waits: list[tuple[int, Flight | None, float]] = [(i, f, now) for i, f in claim.waits]
        for i, value in claim.stored:  # stored since the lookup above: a hit
            results[i] = value
            waits.append((i, None, now))
        try:
            batch_ids = self._compute_groups(
                batch, claim.lead, compute_misses, plan, hits, results, dict(claim.claimed)
            )
        finally:
            self._flights.land(claim.claimed)
        retry: list[int] = []
        for i, flight, t0 in waits:
            if flight is not None:
                flight.done.wait()
                if not flight.ok or usable_value(flight.value, usable) is _MISS:
                    retry.append(i)
                    continue
                results[i] = flight.value
            self._recorder.hit(op, view_id, top_k, time.perf_counter() - t0, prompts[i], digests[i])
        if retry:
            for i, value in zip(
                retry, self._batch(batch, retry, compute_misses, plan), strict=True
            ):
                results[i] = value
        for i, j in repeats:
            results[i] = results[j]
            bid, bsize = batch_ids.get(j, (None, None))
            self._recorder.hit(op, view_id, top_k, 0.0, prompts[i], digests[i], bid, bsize)
        return [results[i] for i in indices]

    def _compute_groups(
        self,
        batch: _Batch,
        lead: list[int],
        compute_misses: Callable[[list[int]], list[Any]],
        plan: BatchPlanner | None,
        hits: int,
        results: dict[int, Any],
        flights: dict[Key, Flight],
    ) -> dict[int, tuple[str, int]]:
        """Compute ``lead`` in planned groups, one forward call each; store and record."""
        if not lead:
            return {}
        groups = plan(lead) if plan is not None else [lead]
        if sorted(i for g in groups for i in g) != sorted(lead):
            raise BackendError(
                f"batch plan returned groups covering {sum(len(g) for g in groups)} indices "
                f"for {len(lead)} misses; a plan must partition the miss indices "
                "(a backend bug: report it to the backend's authors)"
            )
        prompts, digests = batch.prompts, batch.digests
        op, view_id, top_k = batch.op, batch.view_id, batch.top_k
        batch_ids: dict[int, tuple[str, int]] = {}
        for group in groups:
            if not group:
                continue
            start_ns = time.time_ns()
            t0 = time.perf_counter()
            context = (
                self._recorder.start_call(op, view_id, top_k, len(group), start_ns)
                if batch.propagate
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
                key = batch.key_of(i)
                self.cache.put(key, value)
                dkey = batch.disk_key_of(i)
                if dkey is not None and self.disk is not None:
                    self.disk.put(dkey, value)
                results[i] = value
                flight = flights.get(key)
                if flight is not None:
                    flight.finish(value)
            batch_id = self._recorder.record_call(
                op, view_id, top_k, [prompts[i] for i in group], [digests[i] for i in group],
                values, start_ns, wall, hits, batched=True, context=context,
            )
            for i in group:
                batch_ids[i] = (batch_id, len(group))
            hits = 0
        return batch_ids


@dataclass(frozen=True, slots=True)
class _Batch:
    """One ``cached_batch`` request: what every part of its lookup needs."""

    op: str
    view_id: str
    top_k: int
    prompts: list[str]
    digests: list[bytes]
    key_of: Callable[[int], tuple[Any, ...]]
    disk_key_of: Callable[[int], bytes | None]
    usable: Callable[[Any], bool] | None
    propagate: bool


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
    "Instrumentation",
    "BatchPlanner",
    "CacheOp",
    "ProbeHandle",
    "RunHandle",
    "SweepHandle",
    "_prompt_hash",
]
