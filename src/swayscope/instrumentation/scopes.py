"""Where events happen: the sweep, run, probe and view scopes of an instrumentation.

A :class:`Scopes` keeps the current sweep, run id, run and probe, and turns entering
and leaving a scope into events (:mod:`.events`) handed to its owner's exporters. Every
run has its own id and, once it ended, its own counters. A sweep holds one run per
adapter; each of them carries the sweep's id.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from swayscope.instrumentation.events import (
    Event,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    ViewEntered,
    ViewExited,
    view_kind_of,
)
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.vocabulary import PROBE_STATUSES, ProbeOutcome, ProbeStatus


class ScopeOwner(Protocol):
    """What scopes need of the instrumentation that owns them."""

    @property
    def model_name(self) -> str: ...

    def emit(self, event: Event) -> None: ...

    def redact(self, message: str) -> str: ...

    def force_flush(self, timeout_s: float = 5.0) -> bool: ...


class RunCounters(Protocol):
    """Where a run's own counters come from (the owner's stats count every run)."""

    def start_run(self) -> None: ...

    def run_stats(self) -> BackendStats: ...


@dataclass(slots=True)
class ProbeHandle:
    """What ``with inst.probe(...) as p`` yields: the runner sets the outcome on it."""

    name: str
    kind: str
    status: ProbeStatus | None = None
    verdict: str = ""
    score: float | None = None
    error: str | None = None
    error_stack: str | None = None
    """The redacted traceback of ``error`` (see ``BackendInstrumentation.redact``)."""


@dataclass(slots=True)
class RunHandle:
    """What ``with inst.run(...) as r`` yields; ``status`` may be set to ``interrupted``.

    ``stats`` is set when the run ends: this run's counters.
    """

    run_id: str
    status: str = "ok"
    probes_done: int = 0
    total_probes: int = 0
    start_ns: int = 0
    stats: BackendStats | None = None


@dataclass(slots=True)
class SweepHandle:
    """What ``with inst.sweep(...) as s`` yields: the sweep driver counts adapters done and
    may set ``status`` (``interrupted``)."""

    sweep_id: str
    adapters: tuple[str, ...]
    status: str = "complete"
    adapters_done: int = 0
    trace_id: str | None = None
    """The sweep span's trace (set when a tracing exporter made one)."""


class Scopes:
    """The sweep/run/probe/view context of one instrumentation; every event carries
    ``run_id`` (and a run inside a sweep, the sweep's id)."""

    def __init__(self, owner: ScopeOwner, run_id: str, counters: RunCounters) -> None:
        self._owner = owner
        self._counters = counters
        self.run_id = run_id
        self._runs_started = 0
        #: The probe events are labelled with (a plain attribute: read on every lookup).
        self.current_probe: str | None = None
        self._run: RunHandle | None = None
        self._sweep: SweepHandle | None = None

    @contextmanager
    def sweep(
        self, sweep_id: str, *, adapters: Sequence[str], suite: str = "", base_model: str = ""
    ) -> Iterator[SweepHandle]:
        """Scope a checkpoint sweep: the runs inside are its adapters' (``adapters``, their
        labels in checkpoint order, are announced up front: they bound the label values)."""
        handle = SweepHandle(sweep_id=sweep_id, adapters=tuple(adapters))
        t0 = time.perf_counter()
        started = SweepStarted(
            sweep_id=sweep_id,
            start_ns=time.time_ns(),
            suite=suite,
            base_model=base_model or self._owner.model_name,
            adapters=handle.adapters,
        )
        self._owner.emit(started)
        handle.trace_id = started.trace_id
        self._sweep = handle
        try:
            yield handle
        except BaseException as exc:
            if handle.status == "complete":
                handle.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            raise
        finally:
            self._sweep = None
            self._owner.emit(
                SweepEnded(
                    sweep_id=sweep_id,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=handle.status,
                    adapters_done=handle.adapters_done,
                )
            )
            self._owner.force_flush()

    def set_current_probe(self, name: str | None) -> None:
        """Label for subsequent events (v0 API); ``probe()`` is the scoped form."""
        self.current_probe = name

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
        threads: int | None = None,
    ) -> Iterator[RunHandle]:
        """Scope one suite run; events inside carry its ``run_id``. Flushes exporters at the end.

        Without ``run_id`` the first run keeps the current id and every later run gets a
        new one: two runs never share an id.
        """
        if run_id is not None:
            self.run_id = run_id
        elif self._runs_started:
            self.run_id = uuid.uuid4().hex[:16]
        self._runs_started += 1
        self._counters.start_run()
        handle = RunHandle(
            run_id=self.run_id, total_probes=total_probes or len(probes), start_ns=time.time_ns()
        )
        self._run = handle
        t0 = time.perf_counter()
        self._owner.emit(
            RunStarted(
                run_id=self.run_id,
                start_ns=handle.start_ns,
                suite=suite,
                base_model=base_model or self._owner.model_name,
                adapter=adapter,
                total_probes=total_probes or len(probes),
                version=version,
                probes=tuple(probes),
                threads=threads,
                sweep_id=self._sweep.sweep_id if self._sweep is not None else None,
            )
        )
        error: str | None = None
        error_stack: str | None = None
        try:
            yield handle
        except BaseException as exc:
            if handle.status == "ok":
                handle.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            error = self._owner.redact(f"{type(exc).__name__}: {exc}")
            error_stack = self._owner.redact("".join(traceback.format_exception(exc)))
            raise
        finally:
            self._run = None
            handle.stats = self._counters.run_stats()
            self._owner.emit(
                RunEnded(
                    run_id=self.run_id,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=handle.status,
                    error=error,
                    error_stack=error_stack,
                )
            )
            self._owner.force_flush()

    @contextmanager
    def probe(self, name: str, kind: str | None = None) -> Iterator[ProbeHandle]:
        """Set the current probe for the block and restore the previous one after (nests)."""
        handle = ProbeHandle(name=name, kind=kind or name)
        previous = self.current_probe
        self.current_probe = name
        run = self._run
        index = run.probes_done if run is not None else 0
        total = run.total_probes if run is not None else 0
        t0 = time.perf_counter()
        self._owner.emit(
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
            if handle.error is None:
                handle.error = self._owner.redact(f"{type(exc).__name__}: {exc}")
                handle.error_stack = self._owner.redact("".join(traceback.format_exception(exc)))
            raise
        finally:
            self.current_probe = previous
            status: ProbeOutcome
            if interrupted:
                status = "not_run"  # stopped before a verdict: not a probe error
            else:
                if run is not None:
                    run.probes_done += 1
                status = handle.status if handle.status in PROBE_STATUSES else "pass"
            self._owner.emit(
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
                    error_stack=handle.error_stack,
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
        self._owner.emit(
            ViewEntered(
                run_id=self.run_id,
                view_id=view_id,
                view_kind=kind,
                probe=self.current_probe,
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
                self._owner.emit(
                    ViewExited(
                        run_id=self.run_id,
                        view_id=view_id,
                        view_kind=kind,
                        probe=self.current_probe,
                        end_ns=time.time_ns(),
                        duration_s=time.perf_counter() - t0,
                    )
                )


__all__ = ["ProbeHandle", "RunCounters", "RunHandle", "ScopeOwner", "Scopes", "SweepHandle"]
