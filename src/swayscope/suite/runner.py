"""Run a loaded suite against a backend, probe by probe, with telemetry the whole time.

A probe that raises becomes an ``error`` result and the run goes on. Ctrl-C
or SIGTERM stops the run between forward passes: the results so far are
kept, the trace is complete and exporters are flushed.

The result reports this run only: its own ``run_id``, the counters and the
telemetry losses since it started (one instrumentation may run several suites),
and per-probe cache counts.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from swayscope import __version__
from swayscope.backends.api import DifferentialBackend
from swayscope.backends.dummy import DummyBackend
from swayscope.errors import ModelLoadError, SpecError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporter import TelemetryHealth
from swayscope.instrumentation.scopes import RunHandle
from swayscope.instrumentation.vocabulary import DEFAULT_TOP_K
from swayscope.probes.base import ProbeContext, ProbeResult, RunDefaults
from swayscope.suite.progress import RunMonitor
from swayscope.suite.result import SuiteResult
from swayscope.suite.resume import disk_summary, find_resumption, recorded
from swayscope.suite.spec import DefaultsSpec, LoadedSuite, ModelsSpec, WorkersSpec
from swayscope.suite.tally import ProbeTally

log = logging.getLogger(__name__)


def check_model_paths(loaded: LoadedSuite, *, adapter: bool = True) -> None:
    """Fail fast, before telemetry starts or a model loads, on folders that do not exist
    (``adapter``: check ``models.adapter`` too; a sweep brings its own adapters), and on a
    pool of workers for a backend that has no model to give them."""
    models = loaded.spec.models
    if models.kind != "hf":
        if models.workers is not None:
            raise SpecError(
                f"{loaded.where('models', 'workers')}: models.workers needs models.kind 'hf' "
                f"(a pool of workers each holding the model); got {models.kind!r}"
            )
        return
    for key in ("base", "adapter") if adapter else ("base",):
        value = getattr(models, key)
        if value is None:
            hint = (
                " (or run its sweep: section with `swayscope sweep`)"
                if key == "adapter" and loaded.spec.sweep is not None
                else ""
            )
            raise ModelLoadError(
                f"{loaded.where('models')}: models.{key} is required for kind 'hf'; "
                f"give the local folder{hint}"
            )
        if not value.exists():
            raise ModelLoadError(
                f"{loaded.where('models', key)}: models.{key} folder {str(value)!r} does not "
                "exist; check the path (relative paths are resolved against the spec file's "
                "folder)"
            )


def worker_sources(loaded: LoadedSuite, flags: Mapping[str, str]) -> dict[str, str]:
    """Where each setting of ``models.workers`` came from, for the pool's errors: the
    flag that set it (``flags``: setting → flag, for those given), else its place in the
    spec file."""
    sources = {
        key: flags.get(key) or f"{loaded.where('models', 'workers', key)}: models.workers.{key}"
        for key in WorkersSpec.model_fields
    }
    sources["model"] = f"{loaded.where('models', 'base')}: models.base / models.adapter"
    return sources


def check_pool(loaded: LoadedSuite, sources: Mapping[str, str]) -> None:
    """Fail fast, before telemetry starts or a model loads, on a pool of workers that cannot
    start: Ray not installed, more workers than a local cluster's CPUs hold, or a cluster
    address that is malformed or does not answer. ``sources``: as :func:`worker_sources`
    gives them."""
    workers = loaded.spec.models.workers
    if workers is None:
        return
    try:
        from swayscope.backends.ray.cluster import (
            LOCAL,
            check_reachable,
            check_resources,
            local_resources,
        )
    except ImportError as exc:
        raise SpecError(f"{sources['address']}: a pool of workers needs Ray: {exc}") from None
    if workers.address == LOCAL:
        have = local_resources()
        check_resources(f"a local Ray cluster ({have['CPU']:g} CPUs)", have, workers.count,
                        workers.cpus, workers.gpus, sources)
    else:
        check_reachable(workers.address, sources["address"])


def build_backend(
    models: ModelsSpec,
    defaults: DefaultsSpec,
    inst: BackendInstrumentation,
    *,
    adapter_name: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> DifferentialBackend:
    """Construct the backend a spec names, sharing ``inst`` (and so its exporters);
    ``adapter_name`` is what runs report as the adapter (default: its folder's name).

    With ``models.workers`` the model runs on a pool of Ray workers; ``sources`` (see
    :func:`worker_sources`) name the settings in the pool's errors.
    """
    if models.workers is not None:
        return _pool_backend(models, models.workers, defaults, inst, sources, adapter_name)
    if models.kind == "dummy":
        return DummyBackend(
            inst=inst,
            seed=defaults.seed,
            adapter_strength=models.adapter_strength,
            latency_s=models.latency_ms / 1000.0,
        )
    from swayscope.backends.hf import HFBackend

    assert models.base is not None and models.adapter is not None
    backend: DifferentialBackend = HFBackend(
        models.base, models.adapter, **_model_settings(models, defaults, inst, adapter_name)
    )
    return backend


def _model_settings(
    models: ModelsSpec,
    defaults: DefaultsSpec,
    inst: BackendInstrumentation,
    adapter_name: str | None,
) -> dict[str, Any]:
    """The keyword arguments every model backend (in process or a pool) takes from a spec."""
    return {
        "device": models.device,
        "dtype": models.dtype,
        "gguf_file": models.gguf_file,
        "max_top_k": max(defaults.top_k, DEFAULT_TOP_K),
        "max_batch_tokens": defaults.max_batch_tokens,
        "max_batch_size": defaults.max_batch_size,
        "inst": inst,
        "seed": defaults.seed,
        "prefix_cache_max_bytes": defaults.prefix_cache_max_bytes,
        "threads": defaults.threads,
        "adapter_name": adapter_name,
    }


def _pool_backend(
    models: ModelsSpec,
    workers: WorkersSpec,
    defaults: DefaultsSpec,
    inst: BackendInstrumentation,
    sources: Mapping[str, str] | None,
    adapter_name: str | None,
) -> DifferentialBackend:
    from swayscope.backends.ray import RayBackend

    assert models.base is not None and models.adapter is not None
    backend: DifferentialBackend = RayBackend(
        models.base,
        models.adapter,
        workers=workers.count,
        cpus_per_worker=workers.cpus,
        gpus_per_worker=workers.gpus,
        address=workers.address,
        sources=sources,
        **_model_settings(models, defaults, inst, adapter_name),
    )
    return backend


def preload_backend(models: ModelsSpec) -> None:
    """Import the libraries the spec's backend needs, with the cyclic garbage collector
    paused, then freeze what they created out of later collections (``gc.freeze``).

    Importing torch, transformers and PEFT creates some 400 000 objects that live as long
    as the process; the collector would scan them again and again, during the imports and
    at every full collection after (about 1.2 s of a SmolLM2 start-up on the bench
    machine). Frozen, they are still freed by reference counting if ever released; the
    few reference cycles the imports leave behind stay (no change in peak memory).
    """
    if models.kind != "hf":
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        from swayscope.backends.hf.loading import import_stack

        import_stack()
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C for the duration, so both stop the run cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _losses_since(health: TelemetryHealth, errors: dict[str, int], dropped: int) -> dict[str, Any]:
    now = health.exporter_errors()
    return {
        "exporter_errors": {
            name: n - errors.get(name, 0) for name, n in now.items() if n > errors.get(name, 0)
        },
        "spans_dropped": health.spans_dropped - dropped,
    }


def run_suite(
    loaded: LoadedSuite,
    backend: DifferentialBackend,
    *,
    telemetry: dict[str, Any] | None = None,
    live_progress: bool | None = None,
    finish_telemetry: Callable[[], None] | None = None,
    run_id: str | None = None,
) -> SuiteResult:
    """Run every probe in order; always returns a result (partial when interrupted).

    ``finish_telemetry`` (the CLI's: flush spans, push the final values) is called
    when the run has ended and before the result's telemetry losses are taken, so
    that losses at the final flush or the last push are in the result. ``run_id``: the
    run's id (default: the instrumentation chooses); give one when other runs may start
    in the same instrumentation meanwhile (each result counts its own run's lookups).
    """
    spec = loaded.spec
    inst = backend.inst
    probes = loaded.probes
    errors_at_start = inst.health.exporter_errors()
    dropped_at_start = inst.health.spans_dropped
    result = SuiteResult(
        run_id=inst.run_id,
        suite=spec.name,
        started_at=time.time(),
        telemetry=dict(telemetry or {}),
        models={
            "kind": spec.models.kind,
            "base": backend.model_name,
            "adapter": backend.adapter_name,
        },
        notes=list(loaded.translation.notes) if loaded.translation else [],
    )
    threads = getattr(backend, "threads", None)
    result.threads = threads if isinstance(threads, int) else None
    reason = getattr(backend, "threads_reason", None)
    result.threads_reason = reason if isinstance(reason, str) else None
    workers = getattr(backend, "workers", None)
    if isinstance(workers, dict):
        result.models["workers"] = workers
    monitor = RunMonitor(len(probes), live=live_progress, run_id=run_id)
    tally = ProbeTally(run_id)
    inst.add_exporter(monitor)
    inst.add_exporter(tally)
    run: RunHandle | None = None
    ctx = ProbeContext(
        backend=backend,
        defaults=RunDefaults(seed=spec.defaults.seed, top_k=spec.defaults.top_k),
        document=loaded.document,
    )
    t0 = time.perf_counter()
    model_id = getattr(backend, "model_id", None)
    resumption = find_resumption(loaded, inst, model_id if isinstance(model_id, str) else None)
    result.resumed_from = resumption.resumed_from
    try:
        with (
            sigterm_as_interrupt(),
            inst.run(
                suite=spec.name,
                base_model=backend.model_name,
                adapter=backend.adapter_name,
                total_probes=len(probes),
                version=__version__,
                probes=[p.spec.label for p in probes],
                threads=result.threads,
                run_id=run_id,
                resumed_from=resumption.resumed_from,
                resumed_span=resumption.resumed_span,
            ) as run,
            recorded(inst, resumption, run),
        ):
            result.run_id = run.run_id
            for i, probe in enumerate(probes):
                ctx.later_probes = [(p.spec, p) for p in probes[i + 1 :]]
                with inst.probe(probe.spec.label, probe.kind) as handle:
                    p0 = time.perf_counter()
                    try:
                        outcome = probe.run(ctx)
                    except Exception as exc:
                        error = inst.redact(f"{type(exc).__name__}: {exc}")
                        log.error("probe %s raised %s; recorded as error", probe.spec.label, error)
                        # The traceback may quote prompt text: only redacted, only at DEBUG
                        # and on the probe's span.
                        handle.error_stack = inst.redact("".join(traceback.format_exception(exc)))
                        log.debug("%s", handle.error_stack)
                        outcome = ProbeResult(
                            name=probe.spec.label, kind=probe.kind, verdict="error", error=error
                        )
                    outcome.duration_s = time.perf_counter() - p0
                    handle.status = outcome.verdict
                    handle.verdict = outcome.verdict
                    handle.score = outcome.score
                    handle.error = outcome.error
                result.probes.append(outcome)
    except KeyboardInterrupt as exc:
        result.status = "interrupted"
        result.error = f"interrupted ({exc or 'Ctrl-C'})"
        result.not_run = [p.spec.label for p in probes[len(result.probes) :]]
    finally:
        result.wall_s = time.perf_counter() - t0
        inst.remove_exporter(monitor)
        inst.remove_exporter(tally)
        monitor.shutdown()
        if run is not None and run.stats is not None:
            result.backend_stats = run.stats.to_dict()
        if "workers" in result.models:
            result.models["workers"]["failures"] = int(
                result.backend_stats.get("worker_failures", 0)
            )
        result.cache_by_probe = tally.by_probe()
        result.disk_cache = disk_summary(inst)
        if finish_telemetry is not None:
            try:
                finish_telemetry()
            except KeyboardInterrupt:
                log.warning("interrupted while flushing telemetry; losses may be undercounted")
        result.telemetry["trace_id"] = monitor.trace_id
        result.telemetry.update(_losses_since(inst.health, errors_at_start, dropped_at_start))
    return result


__all__ = [
    "build_backend",
    "check_pool",
    "check_model_paths",
    "run_suite",
    "preload_backend",
    "sigterm_as_interrupt",
    "worker_sources",
]
