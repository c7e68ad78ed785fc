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

Calls come through a :class:`Lane`: one backend's way into the pool, with the view state
its calls carry, the adapter they need and the worker they go to. A run's backend has
the pool's own lane (every worker, the adapter the workers loaded); in a sweep each
adapter's run has a lane to one worker, which holds that adapter (:meth:`WorkerPool.attach`),
so several runs compute side by side, one per worker.

One call: the texts are split across the lane's workers that are up (:mod:`.split`: balanced
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
across the other workers that are up and computed there (at most :data:`MAX_ATTEMPTS`
times in all; a part that needs an adapter the worker does not hold has it attached
first), the loss is counted (``BackendStats.worker_failures``, a ``WorkerFailed`` event,
a ``swayscope.worker.lost`` event on the call's span) and logged, and Ray restarts the
worker (at most :data:`.placement.MAX_RESTARTS` times; it reloads the model and takes
calls again once it answers, and a lane's adapter is attached again before it computes
that lane's next part). A part whose forward pass failed on a live worker is not retried:
the error is the call's. A lane that is stopped (:attr:`Lane.stop`: a sweep's Ctrl-C)
stops waiting for its call and raises :class:`KeyboardInterrupt` in the thread that made
it, within :data:`STOP_POLL_S`.
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
    AdapterRef,
    AttachReply,
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
#: How often a thread waiting on the pool looks whether its lane was stopped.
STOP_POLL_S = 0.1
#: How long to wait before asking a restarting worker again whether it is back.
RECHECK_S = 1.0
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
    recheck_at: float = 0.0
    """When to ask a worker Ray is still restarting again (no ``check`` pending)."""
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


class Lane:
    """One backend's way into a pool: the :class:`~swayscope.backends.hf.records.Forward`
    its views compute through.

    Args:
        pool: the pool its calls go to.
        adapter: the adapter its calls need (None: the one the workers loaded).
        home: the worker its calls go to while it is up (None: split across every worker
            up); when it is away, the others compute them.
        stop: set, the lane's calls raise :class:`KeyboardInterrupt` (a sweep's Ctrl-C
            reaching the threads of its runs).
    """

    def __init__(
        self,
        pool: WorkerPool,
        *,
        adapter: AdapterRef | None = None,
        home: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.pool = pool
        self.adapter = adapter
        self.home = home
        self.stop = stop or threading.Event()
        #: The view state every later call carries (its backend's active view).
        self.view: ViewState = TRAINED

    @property
    def max_top_k(self) -> int:
        return self.pool.max_top_k

    @property
    def vocab_size(self) -> int:
        return self.pool.vocab_size

    @property
    def prefix_reuse(self) -> bool:
        return self.pool.prefix_reuse

    def set_view(self, state: ViewState) -> None:
        self.view = state

    def needs(self) -> AdapterRef | None:
        """The adapter a call in the current view needs: none for the base view (every
        LoRA layer off: any adapter the worker holds gives the base model)."""
        if self.view.null is None and self.view.scale == 0.0:
            return None
        return self.adapter

    def check_stopped(self) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt("the sweep was stopped")

    def compute(
        self, batch: Sequence[TokenIds], *, view_id: str | None = None, need: Need = "all"
    ) -> list[ForwardRecord]:
        return self.pool.compute(batch, view_id=view_id, need=need, lane=self)

    def generate(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        max_new_tokens: int,
        stop: tuple[str, ...],
    ) -> list[Generation]:
        return self.pool.generate(
            batch, view_id=view_id, max_new_tokens=max_new_tokens, stop=stop, lane=self
        )


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
        self._max_top_k = configs[0].max_top_k
        #: The pool's own lane: every worker, the adapter they loaded.
        self.lane = Lane(self)
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

    # -- adapters -----------------------------------------------------------------------------

    def attach(self, worker: int, adapter: AdapterRef, stop: threading.Event) -> AttachReply:
        """Give ``worker`` ``adapter`` in place of the one it holds (the base stays loaded);
        the reply says how long it took or why it could not (the previous adapter is then
        back in place). A worker lost meanwhile is given it again once Ray restarted it;
        :class:`BackendError` when it does not come back."""
        target = self._workers[worker]
        for _ in range(MAX_ATTEMPTS):
            self._wait_up(target, stop)
            try:
                reply: AttachReply = self._get(target.actor.attach.remote(adapter), stop)
                return reply
            except _Lost as lost:
                self._mark_lost(target, lost.error)
        raise BackendError(
            f"worker {target.label} was lost {MAX_ATTEMPTS} times while attaching adapter "
            f"{adapter.path!r}; see the Ray logs of the lost worker"
        )

    def _wait_up(self, worker: _Worker, stop: threading.Event) -> None:
        """Return once ``worker`` takes calls; :class:`BackendError` when Ray gave up on it or
        it stays away longer than a model load may take."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            self._check_lost()
            with self._lock:
                up, gone = worker.up, worker.gone
            if up:
                return
            if gone or time.monotonic() >= deadline:
                raise BackendError(
                    f"worker {worker.label} of the pool was lost and did not come back; see "
                    "the Ray logs of the lost worker"
                )
            if stop.is_set():
                raise KeyboardInterrupt("the sweep was stopped")
            self._check_lost(timeout_s=STOP_POLL_S)

    def _get(self, ref: Any, stop: threading.Event) -> Any:
        """``ray.get(ref)``, looking at ``stop`` while it waits; :class:`_Lost` when the
        worker died meanwhile."""
        import ray
        from ray.exceptions import RayActorError

        while not ray.wait([ref], num_returns=1, timeout=STOP_POLL_S)[0]:
            if stop.is_set():
                raise KeyboardInterrupt("the sweep was stopped")
        try:
            return ray.get(ref)
        except RayActorError as exc:
            raise _Lost(first_line(exc)) from None

    # -- calls -----------------------------------------------------------------------------------

    def compute(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        need: Need = "all",
        lane: Lane | None = None,
    ) -> list[ForwardRecord]:
        """One forward call over ``batch`` for ``lane`` (default: the pool's own), split
        across its workers that are up."""
        records: list[ForwardRecord] = self._call(batch, view_id or "", need, lane)
        return records

    def generate(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        max_new_tokens: int,
        stop: tuple[str, ...],
        lane: Lane | None = None,
    ) -> list[Generation]:
        """One greedy generation call over ``batch`` for ``lane`` (default: the pool's own),
        split across its workers that are up (each row's answer does not depend on the rows
        beside it)."""
        generations: list[Generation] = self._call(
            batch, view_id or "", GenerateTask(max_new_tokens, stop), lane
        )
        return generations

    def _call(
        self, batch: Sequence[TokenIds], view: str, task: Task, lane: Lane | None
    ) -> list[Any]:
        """One call's parts sent to the workers, and its answers back in order."""
        if self._closed:
            raise BackendError("the worker pool is closed; build a new backend")
        lane = lane or self.lane
        lane.check_stopped()
        call = self._inst.current_call()
        parent = call.traceparent.header if call is not None and call.traceparent else None
        results: list[Any] = [None] * len(batch)
        pending: dict[Any, _Sent] = {}
        sending = _Sending(batch, view, lane.view, lane.needs(), task, parent)
        try:
            for part in split_batch(batch, self._targets(None, lane.home), view):
                self._send(self._workers[part.worker], part.indices, sending, 1, pending)
            while pending:
                self._receive(pending, results, sending, lane, call)
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
        sending: _Sending,
        attempt: int,
        pending: dict[Any, _Sent],
    ) -> None:
        dispatched_ns = time.time_ns()
        batch = sending.batch
        request = CallRequest(
            [list(batch[i]) for i in indices], sending.view_id, sending.view, sending.task,
            sending.parent, dispatched_ns, attempt, sending.adapter,
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
        results: list[ForwardRecord | None],
        sending: _Sending,
        lane: Lane,
        call: CallContext | None,
    ) -> None:
        """Take the next part that came back: place its answers, or send it again."""
        import ray
        from ray.exceptions import RayActorError

        while True:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=STOP_POLL_S)
            if ready:
                break
            lane.check_stopped()
        ref = ready[0]
        sent = pending.pop(ref)
        self._unload(sent.worker)
        try:
            reply: CallReply = ray.get(ref)
        except RayActorError as exc:
            self._resend(sent, first_line(exc), pending, sending, lane, call)
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
        error: str,
        pending: dict[Any, _Sent],
        sending: _Sending,
        lane: Lane,
        call: CallContext | None,
    ) -> None:
        """Count the loss of ``sent``'s worker and send its part again, split across the
        other workers that are up."""
        lost = sent.worker
        batch = sending.batch
        self._mark_lost(lost, error)
        if sent.attempt >= MAX_ATTEMPTS:
            raise BackendError(
                f"a part of a forward call was lost with its worker {MAX_ATTEMPTS} times "
                f"(last: worker {lost.label}, {error}); the pool cannot compute it"
            )
        targets = self._targets(lost.index, lane.home)
        parts = split_batch([batch[i] for i in sent.indices], targets, sending.view_id)
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
            self._send(self._workers[part.worker], indices, sending, sent.attempt + 1, pending)

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
        Ray gave up on is gone for good (one it is still restarting is asked again)."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        now = time.monotonic()
        with self._lock:
            for w in self._workers:
                if not (w.up or w.gone) and w.check is None and now >= w.recheck_at:
                    w.check = w.actor.facts.remote()
            checks = {w.check: w for w in self._workers if w.check is not None}
        if not checks:
            time.sleep(timeout_s)  # none to wait on yet (restarting): do not spin
            return
        ready, _ = ray.wait(list(checks), num_returns=1 if timeout_s else len(checks),
                            timeout=timeout_s)
        for ref in ready:
            worker = checks[ref]
            restarting = False
            try:
                fact: WorkerFacts = ray.get(ref)
                back = fact.error is None
                note = fact.error or ""
            except ActorUnavailableError:
                back, note, restarting = False, "", True
            except RayActorError as exc:
                back, note = False, first_line(exc)
            with self._lock:
                if worker.check is not ref:
                    continue  # another thread (a run beside this one) took the answer
                worker.check = None
                if restarting:
                    worker.recheck_at = time.monotonic() + RECHECK_S
                    continue
                worker.up, worker.gone = back, not back
            if back:
                log.info("worker %s is back", worker.label)
                self._inst.emit(WorkerStatus(worker.label, True))
            else:
                log.warning("worker %s is gone for good: %s", worker.label, note)

    def _targets(self, exclude: int | None, home: int | None = None) -> list[int]:
        """The workers to send to now (``exclude`` only when no other is up): ``home`` when
        it is up, else those up, or the first lost one to come back (waited for, bounded)."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            up = self.up()
            if home is not None and home in up and home != exclude:
                return [home]
            others = [i for i in up if i != exclude]
            if others or up:
                return others or up
            with self._lock:
                waiting = any(not w.gone for w in self._workers)
            if not waiting or time.monotonic() >= deadline:
                raise BackendError(
                    f"every worker of the pool was lost ({self.size} workers); "
                    "see the Ray logs of the lost workers"
                )
            self._check_lost(timeout_s=min(RECHECK_S, max(0.1, deadline - time.monotonic())))


@dataclass(frozen=True, slots=True)
class _Sending:
    """What every part of one call carries."""

    batch: Sequence[TokenIds]
    view_id: str
    view: ViewState
    adapter: AdapterRef | None
    task: Task
    parent: str | None


class _Lost(Exception):
    """The worker died while it held the request."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


__all__ = ["MAX_ATTEMPTS", "STOP_POLL_S", "Lane", "WorkerPool"]
