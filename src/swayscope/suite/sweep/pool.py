"""A sweep's adapters on a pool of Ray workers, as many at once as there are workers.

:class:`PoolRunner` is the :class:`~swayscope.suite.sweep.runner.AdapterRunner` for a
suite with ``models.workers``. It starts one pool: every worker loads the base model
once (with the first adapter that attaches; one that does not is an error row). Then
one driver thread per worker, a *lane*, takes the next adapter in checkpoint order,
gives it to its worker (peft's ``delete_adapter``/``load_adapter`` there: the base stays
loaded, and a worker loads one adapter at a time) and runs the suite on it, its forward
calls computed by that worker. Each run has its own run id, trace (linked to the
sweep's), counters and result; all go through the driver's one instrumentation, whose
cache keys the base view's entries by the base alone: whichever run asks first computes
them, once, and every other run is served from the cache.

Faults: an adapter a worker cannot attach is an error row (the worker's previous adapter
is back in place) and the lane takes the next; a worker lost mid-call costs the part it
held, computed again on another worker, and gets its adapter back before it computes
again (see :mod:`swayscope.backends.ray.pool`). Ctrl-C (or SIGTERM) stops every lane at
its next forward call: the runs in progress are ``interrupted`` outcomes with their
partial results, the finished ones keep theirs, and no lane outlives the sweep.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from swayscope.errors import AdapterLoadError, BackendError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import LoadedSuite
from swayscope.suite.sweep.adapters import SweepAdapter
from swayscope.suite.sweep.result import AdapterOutcome, AdapterStatus

if TYPE_CHECKING:
    from swayscope.backends.hf.tokenizer import TextEncoder
    from swayscope.backends.ray import RayBackend

log = logging.getLogger(__name__)

#: How long the runs in progress may take to stop after Ctrl-C before the sweep gives up
#: on their partial results (each stops at its next forward call).
STOP_WAIT_S = 30.0
#: How often the driver's thread looks for a finished adapter (and lets Ctrl-C in).
POLL_S = 0.1


class PoolRunner:
    """Runs a sweep's adapters in parallel on the pool ``models.workers`` describes.

    Args:
        loaded: the suite (its ``models.base`` and ``models.workers``; ``models.adapter``
            unused).
        inst: the one instrumentation every run goes through (cache, stats, exporters).
        telemetry: where telemetry goes, copied into each result.
        on_start: called with each adapter before its worker is given it (from the
            adapter's lane thread).
        sources: where each setting of ``models.workers`` came from, for errors.
        backend: a pool already started on this base, with ``inst``, to run on (several
            sweeps on one pool, one after the other); default: one is started.

    ``backend`` is the pool's backend once it started (the caller closes it: that stops
    the workers, and closes the instrumentation).
    """

    def __init__(
        self,
        loaded: LoadedSuite,
        inst: BackendInstrumentation,
        *,
        telemetry: dict[str, Any] | None = None,
        on_start: Callable[[SweepAdapter], None] | None = None,
        sources: Mapping[str, str] | None = None,
        backend: RayBackend | None = None,
    ) -> None:
        self.loaded = loaded
        self.inst = inst
        self.telemetry = dict(telemetry or {})
        self.on_start = on_start
        self.sources = sources
        self.backend = backend
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[SweepAdapter] = deque()
        self._started_with: SweepAdapter | None = None
        self._start_s = 0.0

    # -- the pool ---------------------------------------------------------------------------

    def _start(self) -> Iterator[AdapterOutcome]:
        """Start the pool with the first pending adapter that its workers can attach; an
        error row for each one they could not."""
        spec = self.loaded.spec
        while self.backend is None and self._pending:
            adapter = self._pending[0]
            t0 = time.perf_counter()
            models = spec.models.model_copy(update={"adapter": adapter.path})
            try:
                backend = build_backend(
                    models, spec.defaults, self.inst, adapter_name=adapter.label,
                    sources=self.sources,
                )
            except AdapterLoadError as exc:
                self._pending.popleft()
                log.error("adapter %s could not be loaded: %s", adapter.label, exc)
                yield AdapterOutcome(
                    adapter, "error", error=str(exc), load_s=time.perf_counter() - t0
                )
                continue
            from swayscope.backends.ray import RayBackend

            assert isinstance(backend, RayBackend)
            self.backend = backend
            self._started_with = adapter
            self._start_s = time.perf_counter() - t0

    # -- the lanes --------------------------------------------------------------------------

    def _next(self) -> SweepAdapter | None:
        with self._lock:
            if self._stop.is_set() or not self._pending:
                return None
            return self._pending.popleft()

    def _lane(self, worker: int, out: queue.Queue[AdapterOutcome | None]) -> None:
        """Run adapters on ``worker`` one after another until none is left, the sweep
        stops, or the worker is gone for good (its adapter goes back to the others)."""
        try:
            from swayscope.backends.ray.adapters import lane_encoder

            assert self.backend is not None
            encoder = lane_encoder(self.backend)
            while (adapter := self._next()) is not None:
                try:
                    outcome = self._one(adapter, worker, encoder)
                except BackendError as exc:
                    log.warning("worker %d is gone; its lane stops: %s", worker, exc)
                    with self._lock:
                        self._pending.appendleft(adapter)
                    return
                except KeyboardInterrupt:
                    return  # stopped while its worker was given the adapter: not run
                except Exception as exc:
                    log.exception("adapter %s failed on worker %d", adapter.label, worker)
                    error = f"{type(exc).__name__}: {exc}"
                    outcome = AdapterOutcome(adapter, "error", error=error)
                out.put(outcome)
                if outcome.status == "interrupted":
                    return
        finally:
            out.put(None)

    def _one(self, adapter: SweepAdapter, worker: int, encoder: TextEncoder) -> AdapterOutcome:
        from swayscope.backends.ray.adapters import PoolAdapter

        assert self.backend is not None
        if self.on_start is not None:
            self.on_start(adapter)
        t0 = time.perf_counter()
        extra = self._start_s if adapter is self._started_with else 0.0
        try:
            view, _ = PoolAdapter.attach(
                self.backend, worker, adapter.path, name=adapter.label, stop=self._stop,
                encoder=encoder,
            )
        except AdapterLoadError as exc:
            log.error("adapter %s could not be loaded: %s", adapter.label, exc)
            return AdapterOutcome(
                adapter, "error", error=str(exc), load_s=extra + time.perf_counter() - t0
            )
        load_s = extra + time.perf_counter() - t0
        try:
            result = run_suite(
                self.loaded, view, telemetry=self.telemetry, live_progress=False,
                run_id=uuid.uuid4().hex[:16],
            )
        finally:
            view.close()
        status: AdapterStatus = "complete" if result.status == "complete" else "interrupted"
        return AdapterOutcome(adapter, status, result=result, load_s=load_s)

    # -- the runner -------------------------------------------------------------------------

    def run(self, adapters: Sequence[SweepAdapter]) -> Iterator[AdapterOutcome]:
        self._pending = deque(adapters)
        self._stop.clear()
        yield from self._start()
        if self.backend is None:
            return
        out: queue.Queue[AdapterOutcome | None] = queue.Queue()
        lanes = [
            # Each lane runs in a copy of this context: its runs are the sweep's.
            threading.Thread(
                target=contextvars.copy_context().run, args=(self._lane, worker, out),
                name=f"swayscope-sweep-worker-{worker}", daemon=True,
            )
            for worker in range(min(self.backend.pool.size, len(self._pending)))
        ]
        for lane in lanes:
            lane.start()
        running = len(lanes)
        try:
            while running:
                try:
                    outcome = out.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if outcome is None:
                    running -= 1
                else:
                    yield outcome
        except KeyboardInterrupt:
            self._stop.set()
            yield from _drain(out, running)
            raise
        finally:
            self._stop.set()
            deadline = time.monotonic() + STOP_WAIT_S
            for lane in lanes:
                lane.join(max(0.0, deadline - time.monotonic()))
        for adapter in self._pending:
            yield AdapterOutcome(
                adapter, "error",
                error="not run: its worker was lost for good and no other worker was left "
                "to take it (see the Ray logs of the lost workers)",
            )


def _drain(out: queue.Queue[AdapterOutcome | None], running: int) -> Iterator[AdapterOutcome]:
    """The outcomes of the lanes still running, once stopped (interrupted runs keep their
    partial results), waiting at most :data:`STOP_WAIT_S`."""
    deadline = time.monotonic() + STOP_WAIT_S
    while running and time.monotonic() < deadline:
        try:
            outcome = out.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if outcome is None:
            running -= 1
        else:
            yield outcome


__all__ = ["PoolRunner"]
