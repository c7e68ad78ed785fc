"""The driver's side of a pool of forward workers on Ray.

The pool starts one :class:`~.worker.ForwardWorker` actor per worker, each in its own
bundle of a placement group (so the pool is placed whole or not at all), waits until
every worker has loaded the model, and then computes forward calls for the driver's
:class:`~swayscope.backends.hf.records.RecordSource`: :meth:`WorkerPool.compute` has
the signature of :meth:`ForwardPass.compute <swayscope.backends.hf.forward.ForwardPass.compute>`,
so the driver's cache, planner and instrumentation are the ones a single process uses,
and only the cache's misses reach the pool. :meth:`WorkerPool.generate` does the same
for greedy generation (the driver's
:class:`~swayscope.backends.hf.generate.GenerationSource` calls it).

One call: the texts are split across the workers that are up (:mod:`.split`: balanced
by tokens, each prefix on its home worker), every part is sent at once (the parts
run at the same time, one per worker), and the records are put back in order. Each
part carries the call's W3C ``traceparent`` (from the core's
:class:`~swayscope.instrumentation.calls.CallContext`); the spans the worker recorded
under it come back with the records and go into the call's context, whose
``ForwardCall`` the tracing exporter turns into the call's span and its children.
Per worker, the pool emits its load, each part's timings and memory, and its losses
as events (``WorkerLoad``, ``WorkerCallEnded``, ``WorkerFailed``, ``WorkerStatus``),
which the metrics exporter turns into the ``swayscope_worker_*`` metrics.

A worker lost mid-call (its process killed, its node gone): its part is split again
across the workers that are up and computed there (at most :data:`MAX_ATTEMPTS`
times in all), the loss is counted (``BackendStats.worker_failures``, a
``WorkerFailed`` event, a ``swayscope.worker.lost`` event on the call's span) and
logged, and Ray restarts the worker (at most :data:`.placement.MAX_RESTARTS` times; it
reloads the model and takes calls again once it answers). A part whose forward pass failed
on a live worker is not retried: the error is the call's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from swayscope.backends.api import Generation
from swayscope.backends.hf.prefix import TokenIds
from swayscope.backends.hf.rows import ForwardRecord, Need
from swayscope.backends.hf.view_state import TRAINED, ViewState
from swayscope.backends.ray.cluster import Cluster, check_resources, open_cluster
from swayscope.backends.ray.messages import (
    CallReply,
    CallRequest,
    GenerateTask,
    Task,
    WorkerConfig,
    WorkerFacts,
)
from swayscope.backends.ray.placement import (
    LOAD_TIMEOUT_S,
    first_line,
    place,
    release,
    start_actors,
    wait_loaded,
)
from swayscope.backends.ray.split import split_batch
from swayscope.errors import BackendError
from swayscope.instrumentation import (
    BackendInstrumentation,
    CallContext,
    CallEvent,
    WorkerCallEnded,
    WorkerFailed,
    WorkerLoad,
    WorkerStatus,
)
from swayscope.instrumentation.vocabulary import (
    EVENT_WORKER_LOST,
    SPAN_WORKER_COMPUTE,
    WORKER,
    WORKER_ERROR,
    WORKER_RETRIED_ON,
)

log = logging.getLogger(__name__)

#: How often a part of a call is computed at most: once, then again after each loss.
MAX_ATTEMPTS = 3
#: Names of the settings errors point at, when the caller gives none.
DEFAULT_SOURCES: Mapping[str, str] = {
    "address": "address",
    "count": "workers",
    "cpus": "cpus_per_worker",
    "gpus": "gpus_per_worker",
    "model": "base_path / adapter_path",
}


@dataclass(slots=True)
class _Worker:
    """The driver's view of one worker."""

    index: int
    actor: Any
    up: bool = True
    gone: bool = False
    """Lost for good (Ray gave up restarting it)."""
    in_flight: int = 0
    check: Any = None
    """A pending ``facts`` call on a lost worker: it answers once the worker is back."""
    prefix_entries: int = 0
    prefix_bytes: int = 0

    @property
    def label(self) -> str:
        return str(self.index)


@dataclass(slots=True)
class _Sent:
    """A part in flight."""

    worker: _Worker
    indices: list[int]
    attempt: int
    dispatched_ns: int


class WorkerPool:
    """Forward workers on a Ray cluster, each holding the model; closes what it started.

    Args:
        config: the model each worker loads and its forward pass's settings (each worker
            gets a copy with its own ``index``, once the cluster was found to hold them).
        count: how many workers.
        cpus: CPUs each worker reserves (its torch threads come from its config).
        gpus: GPUs each worker reserves (a fraction shares one).
        address: ``local``, ``auto``, ``host:port`` or ``ray://host:port``.
        inst: the driver's instrumentation: events go to its exporters, counts to its stats.
        sources: where each setting came from, for errors (``address``, ``count``,
            ``cpus``, ``gpus``, ``model``).
    """

    def __init__(
        self,
        config: WorkerConfig,
        count: int,
        *,
        cpus: float,
        gpus: float,
        address: str,
        inst: BackendInstrumentation,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self._inst = inst
        self._sources = {**DEFAULT_SOURCES, **(sources or {})}
        self._lock = threading.Lock()
        self._view = TRAINED
        self._closed = False
        self._group: Any = None
        self._workers: list[_Worker] = []
        self.cluster: Cluster = open_cluster(address, self._sources)
        try:
            check_resources(
                self.cluster.describe(), self.cluster.resources(), count, cpus, gpus,
                self._sources,
            )
            configs = [replace(config, index=i) for i in range(count)]
            self._group = place(self.cluster, count, cpus, gpus, self._sources)
            actors = start_actors(self._group, configs, cpus, gpus)
            self._workers = [_Worker(c.index, a) for c, a in zip(configs, actors, strict=True)]
            self.facts = wait_loaded(
                [(w.label, w.actor) for w in self._workers], self._sources["model"]
            )
        except BaseException:
            self.close()
            raise
        first = self.facts[0]
        self.vocab_size = first.vocab_size
        self.prefix_reuse = first.prefix_reuse
        self._max_top_k = config.max_top_k
        inst.start_pool([w.label for w in self._workers], self.cluster.describe())
        for w in self._workers:
            inst.emit(WorkerStatus(w.label, True))

    # -- start and stop ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker, release their resources, and stop (or leave) the cluster.
        Idempotent; safe after a failed start."""
        if self._closed:
            return
        self._closed = True
        release([(w.label, w.actor) for w in self._workers], self._group)
        self.cluster.close()

    # -- what the driver reads ---------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def max_top_k(self) -> int:
        return self._max_top_k

    def up(self) -> list[int]:
        """The workers that take calls now (lost ones that came back included)."""
        self._check_lost()
        with self._lock:
            return [w.index for w in self._workers if w.up]

    def pids(self) -> list[int]:
        """The workers' process ids as they answered at start (a restart changes one)."""
        return [fact.pid for fact in self.facts]

    def counters(self) -> list[dict[str, int]]:
        """Per worker, the parts and texts it computed since it (re)started."""
        import ray

        return [ray.get(w.actor.counters.remote()) for w in self._workers]

    def null_tensors(
        self, seed: int, init_scale: float, rank_scale: float, *, worker: int | None = None
    ) -> dict[str, Any]:
        """A null adapter's tensors as ``worker`` (default: the first that is up) builds
        them."""
        import ray

        if worker is None:
            up = self.up()
            worker = up[0] if up else 0
        tensors: dict[str, Any] = ray.get(
            self._workers[worker].actor.null_tensors.remote(seed, init_scale, rank_scale)
        )
        return tensors

    # -- views and calls ---------------------------------------------------------------------

    def set_view(self, state: ViewState) -> None:
        """The view state every later call carries (the driver's active view)."""
        self._view = state

    def compute(
        self, batch: Sequence[TokenIds], *, view_id: str | None = None, need: Need = "all"
    ) -> list[ForwardRecord]:
        """One forward call over ``batch``, split across the workers that are up."""
        records: list[ForwardRecord] = self._call(batch, view_id or "", need)
        return records

    def generate(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        max_new_tokens: int,
        stop: tuple[str, ...],
    ) -> list[Generation]:
        """One greedy generation call over ``batch``, split across the workers that are up
        (each row's answer does not depend on the rows beside it)."""
        generations: list[Generation] = self._call(
            batch, view_id or "", GenerateTask(max_new_tokens, stop)
        )
        return generations

    def _call(self, batch: Sequence[TokenIds], view: str, task: Task) -> list[Any]:
        """One call's parts sent to the workers, and its answers back in order."""
        if self._closed:
            raise BackendError("the worker pool is closed; build a new backend")
        call = self._inst.current_call()
        parent = call.traceparent.header if call is not None and call.traceparent else None
        results: list[Any] = [None] * len(batch)
        pending: dict[Any, _Sent] = {}
        try:
            for part in split_batch(batch, self._targets(None), view):
                self._send(self._workers[part.worker], part.indices, batch, view, task, parent,
                           1, pending)
            while pending:
                self._receive(pending, results, batch, view, task, parent, call)
        finally:
            for sent in pending.values():
                self._unload(sent.worker)
        if any(r is None for r in results):
            raise BackendError("a pool call came back without some of its answers (a bug)")
        return results

    def _send(
        self,
        worker: _Worker,
        indices: list[int],
        batch: Sequence[TokenIds],
        view_id: str,
        task: Task,
        parent: str | None,
        attempt: int,
        pending: dict[Any, _Sent],
    ) -> None:
        dispatched_ns = time.time_ns()
        request = CallRequest(
            [list(batch[i]) for i in indices], view_id, self._view, task, parent,
            dispatched_ns, attempt,
        )
        ref = worker.actor.compute.remote(request)
        pending[ref] = _Sent(worker, indices, attempt, dispatched_ns)
        with self._lock:
            worker.in_flight += 1
            in_flight = worker.in_flight
        self._inst.emit(WorkerLoad(worker.label, in_flight))

    def _unload(self, worker: _Worker) -> None:
        with self._lock:
            worker.in_flight = max(0, worker.in_flight - 1)
            in_flight = worker.in_flight
        self._inst.emit(WorkerLoad(worker.label, in_flight))

    def _receive(
        self,
        pending: dict[Any, _Sent],
        results: list[Any],
        batch: Sequence[TokenIds],
        view_id: str,
        task: Task,
        parent: str | None,
        call: CallContext | None,
    ) -> None:
        """Take the next part that came back: place its answers, or send it again."""
        import ray
        from ray.exceptions import RayActorError

        (ref,), _ = ray.wait(list(pending), num_returns=1)
        sent = pending.pop(ref)
        self._unload(sent.worker)
        try:
            reply: CallReply = ray.get(ref)
        except RayActorError as exc:
            self._resend(sent, exc, pending, batch, view_id, task, parent, call)
            return
        if reply.error is not None:
            raise BackendError(f"worker {sent.worker.label}: {reply.error}")
        for i, record in zip(sent.indices, reply.records, strict=True):
            results[i] = record
        self._account(sent, reply, call)

    def _account(self, sent: _Sent, reply: CallReply, call: CallContext | None) -> None:
        """The part's counts into the driver's stats, its spans into the call, its metrics."""
        worker = sent.worker
        with self._lock:
            worker.prefix_entries, worker.prefix_bytes = reply.prefix_entries, reply.prefix_bytes
            entries = sum(w.prefix_entries for w in self._workers)
            nbytes = sum(w.prefix_bytes for w in self._workers)
        self._inst.report(**reply.counts, prefix_entries=entries, prefix_bytes=nbytes)
        compute = next((s for s in reply.spans if s.name == SPAN_WORKER_COMPUTE), None)
        if call is not None:
            for span in reply.spans:
                call.add_span(span)
        self._inst.emit(
            WorkerCallEnded(
                worker=worker.label,
                start_ns=reply.compute_start_ns,
                duration_s=reply.compute_s,
                queue_s=max(0.0, (reply.started_ns - sent.dispatched_ns) / 1e9),
                batch_size=len(sent.indices),
                n_tokens=reply.n_tokens,
                memory_bytes=reply.memory_bytes,
                device_memory_bytes=reply.device_memory_bytes,
                trace_id=compute.trace_id if compute is not None else None,
                span_id=compute.span_id if compute is not None else None,
            )
        )

    # -- losing a worker ---------------------------------------------------------------------

    def _resend(
        self,
        sent: _Sent,
        exc: BaseException,
        pending: dict[Any, _Sent],
        batch: Sequence[TokenIds],
        view_id: str,
        task: Task,
        parent: str | None,
        call: CallContext | None,
    ) -> None:
        """Count the loss of ``sent``'s worker and send its part again, split across the
        workers that are up."""
        lost = sent.worker
        error = first_line(exc)
        self._mark_lost(lost, error)
        if sent.attempt >= MAX_ATTEMPTS:
            raise BackendError(
                f"a part of a forward call was lost with its worker {MAX_ATTEMPTS} times "
                f"(last: worker {lost.label}, {error}); the pool cannot compute it"
            )
        targets = self._targets(lost.index)
        parts = split_batch([batch[i] for i in sent.indices], targets, view_id)
        labels = ",".join(str(p.worker) for p in parts)
        log.warning(
            "worker %s was lost (%s); its part of the call (%d texts) is computed again on "
            "worker(s) %s", lost.label, error, len(sent.indices), labels,
        )
        if call is not None:
            call.add_event(
                CallEvent(
                    EVENT_WORKER_LOST, time.time_ns(),
                    {WORKER: lost.label, WORKER_RETRIED_ON: labels, WORKER_ERROR: error},
                )
            )
        for part in parts:
            indices = [sent.indices[j] for j in part.indices]
            self._send(self._workers[part.worker], indices, batch, view_id, task, parent,
                       sent.attempt + 1, pending)

    def _mark_lost(self, worker: _Worker, error: str) -> None:
        """``worker`` takes no calls until it answers again (Ray restarts it)."""
        with self._lock:
            was_up, worker.up = worker.up, False
            if worker.check is None and not worker.gone:
                worker.check = worker.actor.facts.remote()
        self._inst.report(worker_failures=1)
        self._inst.emit(WorkerFailed(worker.label, error, time.time_ns()))
        if was_up:
            self._inst.emit(WorkerStatus(worker.label, False))

    def _check_lost(self, timeout_s: float = 0.0) -> None:
        """Take back the lost workers that answer again (within ``timeout_s``); a worker
        Ray gave up on is gone for good."""
        import ray
        from ray.exceptions import RayActorError

        with self._lock:
            checks = {w.check: w for w in self._workers if w.check is not None}
        if not checks:
            return
        ready, _ = ray.wait(list(checks), num_returns=1 if timeout_s else len(checks),
                            timeout=timeout_s)
        for ref in ready:
            worker = checks[ref]
            try:
                fact: WorkerFacts = ray.get(ref)
                back = fact.error is None
                note = fact.error or ""
            except RayActorError as exc:
                back, note = False, first_line(exc)
            with self._lock:
                worker.check = None
                worker.up, worker.gone = back, not back
            if back:
                log.info("worker %s is back", worker.label)
                self._inst.emit(WorkerStatus(worker.label, True))
            else:
                log.warning("worker %s is gone for good: %s", worker.label, note)

    def _targets(self, exclude: int | None) -> list[int]:
        """The workers to send to now (``exclude`` only when no other is up): those up, or
        the first lost one to come back (waited for, bounded)."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            up = self.up()
            others = [i for i in up if i != exclude]
            if others or up:
                return others or up
            with self._lock:
                waiting = any(w.check is not None for w in self._workers)
            if not waiting or time.monotonic() >= deadline:
                raise BackendError(
                    f"every worker of the pool was lost ({self.size} workers); "
                    "see the Ray logs of the lost workers"
                )
            self._check_lost(timeout_s=min(5.0, max(0.1, deadline - time.monotonic())))


__all__ = ["MAX_ATTEMPTS", "WorkerPool"]
