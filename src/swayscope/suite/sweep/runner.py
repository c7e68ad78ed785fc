"""Run a suite once per adapter against one base model, and collect the outcomes.

:func:`run_sweep` drives a sweep: it opens the sweep's telemetry scope (each adapter's
run is a trace of its own, linked to the sweep's), takes each adapter's outcome from an
:class:`AdapterRunner` as it finishes, writes its result JSON at once, and keeps going
when an adapter cannot be loaded. Ctrl-C (or SIGTERM) stops it: the adapters finished
so far keep their results, and the summary covers them.

The runner is the seam for running adapters elsewhere: :class:`InProcessRunner` loads
the base model once and swaps adapters in one process, one after the other, so the
base view's forward passes are computed once and shared by every adapter through the
one cache. :class:`~swayscope.suite.sweep.pool.PoolRunner` spreads the adapters over a
pool of Ray workers (``models.workers``), several at once, and yields outcomes in the
order they finish; the summary is in checkpoint order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from swayscope.backends.api import AdapterSwapping, DifferentialBackend
from swayscope.errors import AdapterLoadError, SpecError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.suite.outputs import write_text_atomic
from swayscope.suite.report import render_markdown
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import LoadedSuite
from swayscope.suite.sweep.adapters import Order, SweepAdapter
from swayscope.suite.sweep.result import AdapterOutcome, AdapterStatus, SweepResult

log = logging.getLogger(__name__)


class AdapterRunner(Protocol):
    """Runs the suite on each adapter; yields each adapter's outcome as it finishes.

    An adapter that cannot be loaded is an outcome with status ``error``; a run stopped
    by Ctrl-C is an ``interrupted`` outcome (one per run in progress, when several run at
    once), after which the runner yields nothing more. Outcomes may come in any order
    (each names its adapter).
    """

    def run(self, adapters: Sequence[SweepAdapter]) -> Iterator[AdapterOutcome]: ...


class SwappingBackend(DifferentialBackend, AdapterSwapping, Protocol):
    """A backend whose adapter can be swapped (what :class:`InProcessRunner` needs)."""


def check_sweepable(loaded: LoadedSuite) -> None:
    """:class:`SpecError` unless the suite's models can be swept (a base model of kind hf,
    in this process or on a pool of workers)."""
    if loaded.spec.models.kind != "hf":
        raise SpecError(
            f"{loaded.where('models', 'kind')}: a sweep swaps LoRA adapters on one base "
            f"model; models.kind must be 'hf' (got {loaded.spec.models.kind!r})"
        )


class InProcessRunner:
    """One process, one base model: the first adapter is loaded with the base, each later
    one swapped in (``HFBackend.swap_adapter``); the suite runs on each in turn.

    Args:
        loaded: the suite (its ``models.base`` and settings; ``models.adapter`` unused).
        inst: the one instrumentation every run goes through (cache, stats, exporters).
        telemetry: where telemetry goes, copied into each result.
        on_start: called with each adapter before it is loaded.
        live_progress: the progress bar (None: decide by the terminal).

    ``backend`` is the loaded backend once the first adapter loaded (the caller closes its
    instrumentation).
    """

    def __init__(
        self,
        loaded: LoadedSuite,
        inst: BackendInstrumentation,
        *,
        telemetry: dict[str, Any] | None = None,
        on_start: Callable[[SweepAdapter], None] | None = None,
        live_progress: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.inst = inst
        self.telemetry = dict(telemetry or {})
        self.on_start = on_start
        self.live_progress = live_progress
        self.backend: SwappingBackend | None = None

    def _build(self, adapter: SweepAdapter) -> SwappingBackend:
        spec = self.loaded.spec
        models = spec.models.model_copy(update={"adapter": adapter.path})
        backend = build_backend(models, spec.defaults, self.inst, adapter_name=adapter.label)
        return cast(SwappingBackend, backend)

    def _attach(self, adapter: SweepAdapter) -> SwappingBackend:
        if self.backend is None:
            from swayscope.backends.hf.loading import check_fits

            # A broken adapter found now costs no base load (check_sweepable: kind hf).
            models = self.loaded.spec.models
            assert models.base is not None
            check_fits(models.base, models.gguf_file, adapter.path)
            self.backend = self._build(adapter)
        else:
            self.backend.swap_adapter(adapter.path, name=adapter.label)
        return self.backend

    def run(self, adapters: Sequence[SweepAdapter]) -> Iterator[AdapterOutcome]:
        for adapter in adapters:
            if self.on_start is not None:
                self.on_start(adapter)
            t0 = time.perf_counter()
            try:
                backend = self._attach(adapter)
            except AdapterLoadError as exc:
                log.error("adapter %s could not be loaded: %s", adapter.label, exc)
                yield AdapterOutcome(
                    adapter, "error", error=str(exc), load_s=time.perf_counter() - t0
                )
                continue
            load_s = time.perf_counter() - t0
            # Each run has its own id and counters (the stats since it started).
            result = run_suite(
                self.loaded, backend, telemetry=self.telemetry, live_progress=self.live_progress
            )
            status: AdapterStatus = (
                "complete" if result.status == "complete" else "interrupted"
            )
            yield AdapterOutcome(adapter, status, result=result, load_s=load_s)
            if status == "interrupted":
                return


def _write_outputs(
    outcome: AdapterOutcome, json_path: Path | None, markdown_path: Path | None
) -> list[str]:
    """Write the adapter's result JSON (and markdown); what could not be written."""
    failures: list[str] = []
    result = outcome.result
    if result is None:
        return failures
    for path, label, write in (
        (json_path, "result JSON", result.write_json),
        (markdown_path, "markdown report",
         lambda p: write_text_atomic(p, render_markdown(result))),
    ):
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:
            failures.append(
                f"could not write {outcome.adapter.label}'s {label} to {str(path)!r}: "
                f"{exc.strerror or exc}"
            )
            continue
        if label == "result JSON":
            outcome.result_file = path
    return failures


def run_sweep(
    loaded: LoadedSuite,
    adapters: Sequence[SweepAdapter],
    runner: AdapterRunner,
    inst: BackendInstrumentation,
    *,
    order: Order = "given",
    json_path: Callable[[SweepAdapter], Path | None] = lambda a: None,
    markdown_path: Callable[[SweepAdapter], Path | None] = lambda a: None,
    on_outcome: Callable[[AdapterOutcome], None] | None = None,
    telemetry: dict[str, Any] | None = None,
    finish_telemetry: Callable[[], None] | None = None,
) -> SweepResult:
    """Run the suite on every adapter through ``runner``; always returns the sweep's result
    (with the finished adapters only, when interrupted).

    Each adapter's result JSON is written (atomically) as soon as it finishes, to
    ``json_path(adapter)``; ``on_outcome`` then sees it. ``finish_telemetry`` (flush
    spans, push the final values) is called once the sweep has ended, before its
    telemetry losses are taken (the adapters' runs leave it to the sweep).
    """
    sweep_id = uuid.uuid4().hex[:16]
    sweep = SweepResult(
        sweep_id=sweep_id,
        suite=loaded.spec.name,
        base_model=str(loaded.spec.models.base or ""),
        order=order,
        started_at=time.time(),
        telemetry=dict(telemetry or {}),
    )
    done: dict[int, AdapterOutcome] = {}
    t0 = time.perf_counter()
    base_name = loaded.spec.models.base.name if loaded.spec.models.base else ""
    try:
        with inst.sweep(
            sweep_id, adapters=[a.label for a in adapters], suite=loaded.spec.name,
            base_model=base_name,
        ) as handle:
            sweep.telemetry["sweep_trace_id"] = handle.trace_id
            outcomes = runner.run(adapters)
            try:
                for outcome in outcomes:
                    sweep.errors.extend(
                        _write_outputs(
                            outcome, json_path(outcome.adapter), markdown_path(outcome.adapter)
                        )
                    )
                    done[outcome.adapter.index] = outcome
                    handle.adapters_done += 1
                    if on_outcome is not None:
                        on_outcome(outcome)
                    if outcome.status == "interrupted":
                        # The runner yields the other runs it stopped, then ends.
                        handle.status = sweep.status = "interrupted"
            except KeyboardInterrupt:
                handle.status = sweep.status = "interrupted"
            finally:
                close = getattr(outcomes, "close", None)
                if close is not None:
                    close()
            if sweep.status == "interrupted":
                log.warning(
                    "sweep interrupted after %d of %d adapters; the finished ones keep their "
                    "results", len(done), len(adapters),
                )
    finally:
        sweep.wall_s = time.perf_counter() - t0
        sweep.adapters = [
            done.get(a.index) or AdapterOutcome(a, "not_run") for a in adapters
        ]
        sweep.backend_stats = inst.stats.to_dict()
        if finish_telemetry is not None:
            try:
                finish_telemetry()
            except KeyboardInterrupt:
                log.warning("interrupted while flushing telemetry; losses may be undercounted")
        sweep.telemetry["exporter_errors"] = inst.health.exporter_errors()
        sweep.telemetry["spans_dropped"] = inst.health.spans_dropped
    return sweep


__all__ = [
    "AdapterRunner",
    "InProcessRunner",
    "SwappingBackend",
    "check_sweepable",
    "run_sweep",
]
