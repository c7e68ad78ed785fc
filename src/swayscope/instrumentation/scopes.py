"""Where events happen: the sweep, run, probe and view scopes of an instrumentation.

Scopes live in the caller's context (:mod:`contextvars`), so several runs can be
live in one instrumentation at once — one per thread, say, each adapter of a sweep
in its own — each with its own run id, trace, counters and probes, while the cache
stays shared. A thread started inside a scope sees it when it runs in a copy of the
context (``contextvars.copy_context().run``); a thread whose context holds no scope of
this instrumentation (a plain ``threading.Thread``) counts in the scope entered or left
last, as when scopes were one per instrumentation. Entering and leaving a scope becomes
events (:mod:`.events`) handed to the owner's exporters; the places of their spans
come from the trace layout (:mod:`.tracing`).
"""

from __future__ import annotations

import contextvars
import itertools
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from swayscope.instrumentation.events import (
    Event,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    TraceRotated,
    ViewEntered,
    ViewExited,
    view_kind_of,
)
from swayscope.instrumentation.stats import BackendStats
from swayscope.instrumentation.tracing import Counts, Frame, Rotation, SpanLink, SpanPlace
from swayscope.instrumentation.vocabulary import PROBE_STATUSES, ProbeOutcome, ProbeStatus


class ScopeOwner(Protocol):
    """What scopes need of the instrumentation that owns them."""

    @property
    def model_name(self) -> str: ...

    def emit(self, event: Event) -> None: ...

    def redact(self, message: str) -> str: ...

    def force_flush(self, timeout_s: float = 5.0) -> bool: ...


class ScopeLayout(Protocol):
    """The recorder's side of scopes: trace places and counters, under its one lock."""

    def scope_root(
        self, sweep: SpanPlace | None, links: tuple[SpanLink, ...] = ()
    ) -> tuple[SpanPlace | None, SpanPlace | None]: ...

    def open_frame(
        self, kind: str, name: str, run_id: str, parent: Frame | None
    ) -> tuple[Frame, list[Rotation]]: ...

    def close_frame(self, frame: Frame) -> tuple[SpanPlace | None, Counts]: ...


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
    trace_id: str | None = None
    """The run's trace (its root span's), when a tracing exporter is attached."""
    span_id: str | None = None
    """The run's root span."""


@dataclass(slots=True)
class SweepHandle:
    """What ``with inst.sweep(...) as s`` yields: the sweep driver counts adapters done and
    may set ``status`` (``interrupted``)."""

    sweep_id: str
    adapters: tuple[str, ...]
    status: str = "complete"
    adapters_done: int = 0
    trace_id: str | None = None
    """The sweep's trace (set when a tracing exporter is attached)."""


@dataclass(eq=False, slots=True)
class LiveRun:
    """A run in progress: its handle, its own counters, its frame, its outcome span."""

    handle: RunHandle
    frame: Frame
    outcome: SpanPlace | None
    stats: BackendStats = field(default_factory=BackendStats)
    max_batch: int = 0
    probes_errored: int = 0


@dataclass(eq=False, slots=True)
class LiveSweep:
    handle: SweepHandle
    root: SpanPlace | None


class Scope(NamedTuple):
    """What the caller's context is inside: its run, innermost frame, probe label, sweep."""

    run: LiveRun | None = None
    frame: Frame | None = None
    probe: str | None = None
    sweep: LiveSweep | None = None


NO_SCOPE = Scope()
_instances = itertools.count()


class Scopes:
    """The sweep/run/probe/view scopes of one instrumentation, per context.

    ``run_id`` is the id events carry outside any run (the v0 behaviour: one id per
    instrumentation); inside a run, its own.
    """

    def __init__(self, owner: ScopeOwner, run_id: str, layout: ScopeLayout) -> None:
        self._owner = owner
        self._layout = layout
        self.default_run_id = run_id
        self._runs_started = 0
        # One variable per instrumentation: two instrumentations never see each other's
        # scopes. Reset on every scope's exit, so a context keeps no value once it left.
        self.var: contextvars.ContextVar[Scope] = contextvars.ContextVar(
            f"swayscope_scope_{next(_instances)}"
        )
        #: What a context without a scope of its own counts in (see the module docstring).
        self.latest = NO_SCOPE

    # -- what the caller's context is in -----------------------------------------------

    def current(self) -> Scope:
        scope = self.var.get(None)
        return self.latest if scope is None else scope

    def _enter(self, scope: Scope) -> contextvars.Token[Scope]:
        token = self.var.set(scope)
        self.latest = scope
        return token

    def _leave(self, token: contextvars.Token[Scope]) -> None:
        self.var.reset(token)
        self.latest = self.var.get(NO_SCOPE)

    @property
    def run_id(self) -> str:
        run = self.current().run
        return run.handle.run_id if run is not None else self.default_run_id

    @property
    def current_probe(self) -> str | None:
        return self.current().probe

    def set_current_probe(self, name: str | None) -> None:
        """Label for subsequent events in this context (v0 API); ``probe()`` is the scoped
        form."""
        self._enter(self.current()._replace(probe=name))

    def _rotated(self, run_id: str, rotations: list[Rotation]) -> None:
        if rotations:
            self._owner.emit(TraceRotated(run_id, time.time_ns(), tuple(rotations)))

    # -- sweep ------------------------------------------------------------------------------

    @contextmanager
    def sweep(
        self, sweep_id: str, *, adapters: Sequence[str], suite: str = "", base_model: str = ""
    ) -> Iterator[SweepHandle]:
        """Scope a checkpoint sweep: the runs inside are its adapters' (``adapters``, their
        labels in checkpoint order, are announced up front: they bound the label values)."""
        handle = SweepHandle(sweep_id=sweep_id, adapters=tuple(adapters))
        start_ns = time.time_ns()
        t0 = time.perf_counter()
        root, outcome = self._layout.scope_root(None)
        handle.trace_id = root.trace_id if root is not None else None
        self._owner.emit(
            SweepStarted(
                sweep_id=sweep_id,
                start_ns=start_ns,
                suite=suite,
                base_model=base_model or self._owner.model_name,
                adapters=handle.adapters,
                trace_id=handle.trace_id,
                span_id=root.span_id if root is not None else None,
                place=root,
            )
        )
        token = self._enter(self.current()._replace(sweep=LiveSweep(handle, root)))
        try:
            yield handle
        except BaseException as exc:
            if handle.status == "complete":
                handle.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            raise
        finally:
            self._leave(token)
            self._owner.emit(
                SweepEnded(
                    sweep_id=sweep_id,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=handle.status,
                    adapters_done=handle.adapters_done,
                    place=outcome,
                    start_ns=start_ns,
                )
            )
            self._owner.force_flush()

    # -- run --------------------------------------------------------------------------------

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
        resumed_from: str | None = None,
        resumed_span: tuple[str, str] | None = None,
    ) -> Iterator[RunHandle]:
        """Scope one suite run in this context; events inside carry its ``run_id``. Flushes
        exporters at the end.

        Without ``run_id`` the first run keeps the instrumentation's id and every later run
        gets a new one: two runs never share an id.
        """
        if run_id is None:
            run_id = self.default_run_id if not self._runs_started else uuid.uuid4().hex[:16]
        self._runs_started += 1
        # Outside any run, events carry the id of the run started last (as v0 code expects).
        self.default_run_id = run_id
        outer = self.current()
        sweep = outer.sweep
        links = (
            (SpanLink(resumed_span[0], resumed_span[1], "resumed"),) if resumed_span else ()
        )
        root, outcome = self._layout.scope_root(sweep.root if sweep is not None else None, links)
        total = total_probes or len(probes)
        handle = RunHandle(
            run_id=run_id, total_probes=total, start_ns=time.time_ns(),
            trace_id=root.trace_id if root is not None else None,
            span_id=root.span_id if root is not None else None,
        )
        run = LiveRun(handle, Frame("run", run_id, run_id, root, None), outcome)
        t0 = time.perf_counter()
        self._owner.emit(
            RunStarted(
                run_id=run_id,
                start_ns=handle.start_ns,
                suite=suite,
                base_model=base_model or self._owner.model_name,
                adapter=adapter,
                total_probes=total,
                version=version,
                probes=tuple(probes),
                threads=threads,
                trace_id=handle.trace_id,
                span_id=handle.span_id,
                sweep_id=sweep.handle.sweep_id if sweep is not None else None,
                place=root,
                resumed_from=resumed_from,
            )
        )
        token = self._enter(Scope(run, run.frame, None, sweep))
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
            self._leave(token)
            _, counts = self._layout.close_frame(run.frame)
            handle.stats = self.run_stats(run)
            self._owner.emit(
                RunEnded(
                    run_id=run_id,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=handle.status,
                    error=error,
                    error_stack=error_stack,
                    place=outcome,
                    start_ns=handle.start_ns,
                    counts=counts,
                    probes_done=handle.probes_done,
                    probes_errored=run.probes_errored,
                )
            )
            self._owner.force_flush()

    def run_stats(self, run: LiveRun) -> BackendStats:
        """A copy of ``run``'s own counters (taken under the recorder's lock by its caller
        when it matters; a finished run's counters no longer change)."""
        stats = run.stats.copy()
        stats.max_batch_size = run.max_batch
        return stats

    # -- probe and view ---------------------------------------------------------------------

    @contextmanager
    def probe(self, name: str, kind: str | None = None) -> Iterator[ProbeHandle]:
        """Set the current probe for the block and restore the previous one after (nests)."""
        handle = ProbeHandle(name=name, kind=kind or name)
        outer = self.current()
        run = outer.run
        run_id = run.handle.run_id if run is not None else self.default_run_id
        index = run.handle.probes_done if run is not None else 0
        total = run.handle.total_probes if run is not None else 0
        frame, rotations = self._layout.open_frame("probe", name, run_id, outer.frame)
        self._rotated(run_id, rotations)
        t0 = time.perf_counter()
        self._owner.emit(
            ProbeStarted(
                run_id=run_id,
                probe=name,
                kind=handle.kind,
                start_ns=time.time_ns(),
                index=index,
                total=total,
                place=frame.place,
            )
        )
        token = self._enter(outer._replace(frame=frame, probe=name))
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
            self._leave(token)
            status: ProbeOutcome
            if interrupted:
                status = "not_run"  # stopped before a verdict: not a probe error
            else:
                if run is not None:
                    run.handle.probes_done += 1
                status = handle.status if handle.status in PROBE_STATUSES else "pass"
                if status == "error" and run is not None:
                    run.probes_errored += 1
            place, counts = self._layout.close_frame(frame)
            self._owner.emit(
                ProbeEnded(
                    run_id=run_id,
                    probe=name,
                    kind=handle.kind,
                    end_ns=time.time_ns(),
                    duration_s=time.perf_counter() - t0,
                    status=status,
                    verdict=handle.verdict,
                    score=handle.score,
                    error=handle.error,
                    done=run.handle.probes_done if run is not None else 0,
                    total=total,
                    error_stack=handle.error_stack,
                    place=place,
                    counts=counts,
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
        outer = self.current()
        run_id = outer.run.handle.run_id if outer.run is not None else self.default_run_id
        frame, rotations = self._layout.open_frame("view", view_id, run_id, outer.frame)
        self._rotated(run_id, rotations)
        self._owner.emit(
            ViewEntered(
                run_id=run_id,
                view_id=view_id,
                view_kind=kind,
                probe=outer.probe,
                start_ns=start_ns,
                switch_s=time.perf_counter() - t0,
                place=frame.place,
            )
        )
        token = self._enter(outer._replace(frame=frame))
        try:
            yield
        finally:
            self._leave(token)
            try:
                if exit is not None:
                    exit()
            finally:
                place, counts = self._layout.close_frame(frame)
                self._owner.emit(
                    ViewExited(
                        run_id=run_id,
                        view_id=view_id,
                        view_kind=kind,
                        probe=outer.probe,
                        end_ns=time.time_ns(),
                        duration_s=time.perf_counter() - t0,
                        place=place,
                        counts=counts,
                    )
                )


__all__ = [
    "NO_SCOPE",
    "LiveRun",
    "LiveSweep",
    "ProbeHandle",
    "RunHandle",
    "Scope",
    "ScopeLayout",
    "ScopeOwner",
    "Scopes",
    "SweepHandle",
]
