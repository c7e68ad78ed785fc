"""A checkpoint sweep on a pool of Ray workers: four checkpoints on two workers, two at a
time, give the in-process sweep's scores and base-view counts; each adapter's run keeps
its own id, trace, counters and metrics; the dashboard's sweep and worker rows have data
together. Faults: a worker killed mid-sweep, a swap that fails on a worker, Ctrl-C.

Cost: one pool for the sweep, one for the faults (and the killed worker's restart), one
for the Ctrl-C test's command, on the session's cluster; the suite is small.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ray_testing import dashboard_queries, exporter_servers
from sway_testing import Recorder, popen_swayscope
from test_ray_telemetry import start_prometheus

from swayscope.instrumentation import (
    BackendInstrumentation,
    RunEnded,
    RunStarted,
    WorkerCallEnded,
    WorkerFailed,
    WorkerLoad,
)

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths
    from swayscope.suite.sweep.result import SweepResult

#: Enough forward calls per run (small batches of 64 prompts) that two runs overlap by far
#: more than the lanes' start-up differs.
PROMPTS = "".join(f"      - 'Checkpoint prompt {i}: the baker opens his shop'\n" for i in range(64))
SUITE = """\
version: 1
name: ray-sweep
models:
  kind: hf
  base: {base}
  device: cpu
{workers}defaults:
  top_k: 64
  threads: 1
  max_batch_size: 4
suite:
  - kind: delta_kl
    prompts:
""" + PROMPTS + """\
  - kind: perplexity_shift
    max_chunks: 2
"""
POOL = "  workers: {count: 2}\n"
LABELS = ["step-00000", "step-00002", "step-00004", "step-00006"]
#: Counters of the whole sweep that must not depend on where or in which order it ran.
SWEEP_COUNTS = (
    "base_forward_passes", "base_forward_calls", "forward_passes", "cache_hits",
    "cache_misses",
)


def sweep_on(
    tiny_model: TinyModelPaths, adapters: list[Path], inst: BackendInstrumentation,
    workers: str = "",
) -> tuple[SweepResult, Any]:
    """``adapters`` swept with the suite, in process or (``workers``) on a pool; the runner
    (whose ``backend``, for a pool, the caller closes)."""
    from swayscope.suite.spec import load_suite_text
    from swayscope.suite.sweep.adapters import order_adapters
    from swayscope.suite.sweep.pool import PoolRunner
    from swayscope.suite.sweep.runner import InProcessRunner, run_sweep

    loaded = load_suite_text(SUITE.format(base=tiny_model.base_dir, workers=workers))
    ordered, order = order_adapters(adapters)
    runner = (
        PoolRunner(loaded, inst) if workers
        else InProcessRunner(loaded, inst, live_progress=False)
    )
    return run_sweep(loaded, ordered, runner, inst, order=order), runner


def scores(result: SweepResult) -> dict[tuple[str, str], tuple[str, float | None]]:
    return {
        (name, p.label): (p.verdict, p.score)
        for name in result.probe_names() for p in result.points(name)
    }


def assert_same_scores(got: SweepResult, want: SweepResult, labels: list[str]) -> None:
    g, w = scores(got), scores(want)
    for key in [k for k in w if k[1] in labels]:
        (gv, gs), (wv, ws) = g[key], w[key]
        assert gv == wv, key
        assert gs is not None and ws is not None and abs(gs - ws) <= 1e-6, (key, gs, ws)


@pytest.fixture(scope="module")
def in_process(tiny_model: TinyModelPaths, checkpoints: Path) -> SweepResult:
    inst = BackendInstrumentation(cache_maxsize=4096)
    result, _ = sweep_on(tiny_model, sorted(checkpoints.iterdir()), inst)
    inst.close()
    assert [o.status for o in result.adapters] == ["complete"] * 4
    return result


@dataclass
class PoolSweep:
    result: SweepResult
    events: list[Any]
    spans: list[Any]
    registry: Any
    trace: Path
    prometheus: Any


@pytest.fixture(scope="module")
def pooled(
    ray_address: str, tiny_model: TinyModelPaths, checkpoints: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PoolSweep]:
    """The four checkpoints on two workers, traced (in memory), counted (Prometheus, and a
    real Prometheus scraping it when one is installed) and written to a JSONL trace."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from swayscope.instrumentation import TraceWriter
    from swayscope.instrumentation.exporters.otel import OtelExporter
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

    tmp = tmp_path_factory.mktemp("pool-sweep")
    recorder, spans = Recorder(), InMemorySpanExporter()
    prom = PrometheusExporter(port=0, first_scrape_wait_s=30.0)
    prometheus = (
        start_prometheus(tmp, f"127.0.0.1:{prom.port}") if shutil.which("prometheus") else None
    )
    inst = BackendInstrumentation(
        cache_maxsize=4096,
        exporters=[
            OtelExporter(span_exporter=spans, batch=False), prom, TraceWriter(tmp / "t.jsonl"),
            recorder,
        ],
    )
    runner = None
    try:
        result, runner = sweep_on(
            tiny_model, sorted(checkpoints.iterdir()), inst, workers=POOL
        )
        if prometheus is not None:
            tokens = sum(e.n_tokens for e in recorder.events if isinstance(e, WorkerCallEnded))
            srv = exporter_servers()
            final = srv.wait_for(
                lambda: prometheus.scalar("sum(swayscope_worker_tokens_total)") == tokens
                and prometheus.scalar("min(swayscope_sweep_adapter_progress_ratio)") == 1,
                30.0,
            )
            assert final, "Prometheus never scraped the sweep's final values"
        # The cluster's CPUs go back for the other tests' pools; the metrics stay served.
        assert runner.backend is not None
        runner.backend.pool.close()
        yield PoolSweep(
            result, list(recorder.events), list(spans.get_finished_spans()), prom.registry,
            tmp / "t.jsonl", prometheus,
        )
    finally:
        if runner is not None and runner.backend is not None:
            runner.backend.close()
        inst.close()
        if prometheus is not None:
            prometheus.process.stop()


def test_four_checkpoints_on_two_workers_give_the_in_process_scores_and_counts(
    pooled: PoolSweep, in_process: SweepResult
) -> None:
    result = pooled.result
    assert result.status == "complete" and result.exit_code == in_process.exit_code
    assert [o.adapter.label for o in result.adapters] == LABELS
    assert [o.status for o in result.adapters] == ["complete"] * 4
    assert_same_scores(result, in_process, LABELS)
    for key in SWEEP_COUNTS:
        assert result.backend_stats[key] == in_process.backend_stats[key], key
    assert result.backend_stats["base_forward_passes"] > 0
    # Each run counts its own: the base view computed once in all, by whichever run asked
    # first, and every adapter's own views by itself.
    rows = [o.stats for o in result.adapters]
    for key in ("base_forward_passes", "forward_passes", "cache_hits", "cache_misses"):
        assert sum(int(r[key]) for r in rows) == result.backend_stats[key], key
    assert all(r["forward_passes"] > r["base_forward_passes"] for r in rows)
    # Two workers, each holding adapters in turn; two runs at a time.
    homes = {o.result.models["workers"]["home"] for o in result.adapters if o.result}
    assert homes == {"0", "1"}
    assert len({o.result.run_id for o in result.adapters if o.result}) == 4
    starts = {e.run_id: e.start_ns for e in pooled.events if isinstance(e, RunStarted)}
    spans = [(starts[e.run_id], e.end_ns) for e in pooled.events if isinstance(e, RunEnded)]
    assert len(spans) == 4
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2))


def test_one_trace_per_adapter_run_linked_to_the_sweep_and_worker_spans_under_forwards(
    pooled: PoolSweep,
) -> None:
    spans = pooled.spans
    (sweep,) = [s for s in spans if s.name == "swayscope.sweep"]
    runs = [s for s in spans if s.name == "swayscope.run"]
    assert sorted(r.attributes["swayscope.adapter"] for r in runs) == LABELS
    assert len({r.context.trace_id for r in runs}) == 4
    for run in runs:
        (link,) = run.links
        assert link.context.span_id == sweep.context.span_id
        assert link.attributes == {"swayscope.link": "sweep"}
    forwards = {(s.context.trace_id, s.context.span_id) for s in spans
                if s.name == "swayscope.forward"}
    workers = [s for s in spans if s.name.startswith("swayscope.worker.")]
    assert {s.attributes["swayscope.worker"] for s in workers} == {"0", "1"}
    for span in workers:
        assert (span.context.trace_id, span.parent.span_id) in forwards, span.name


def test_metrics_tell_the_adapters_and_the_workers_apart(pooled: PoolSweep) -> None:
    registry = pooled.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)  # type: ignore[no-any-return]

    assert value("swayscope_sweep_progress_ratio") == 1.0
    for label in LABELS:
        assert value("swayscope_sweep_adapter_progress_ratio", adapter=label) == 1.0
    for (name, label), (_, score) in scores(pooled.result).items():
        assert value("swayscope_probe_score", probe=name, adapter=label) == pytest.approx(score)
    runs = {
        s.labels["run_id"]: s.labels["adapter"]
        for m in registry.collect() if m.name == "swayscope_run_info" for s in m.samples
    }
    want = {o.result.run_id: o.adapter.label for o in pooled.result.adapters if o.result}
    assert runs == want
    assert value("swayscope_run_active") == 0.0
    for worker in ("0", "1"):
        assert (value("swayscope_worker_tokens_total", worker=worker) or 0) > 0
        assert value("swayscope_worker_up", worker=worker) == 1.0


def test_jsonl_lines_name_their_own_adapter(pooled: PoolSweep) -> None:
    lines = [json.loads(line) for line in pooled.trace.read_text().splitlines()]
    by_run: dict[str, set[str]] = {}
    for line in lines:
        by_run.setdefault(line["run_id"], set()).add(line["adapter"])
    assert sorted(a for adapters in by_run.values() for a in adapters) == LABELS


@pytest.mark.server
def test_the_dashboard_sweep_and_worker_rows_have_data_together(pooled: PoolSweep) -> None:
    """Every query of the sweep row and of each worker's row returns data from a real
    Prometheus that scraped the sweep, with any one adapter's run selected."""
    exporter_servers().need_binary("prometheus")
    dq = dashboard_queries()
    prometheus = pooled.prometheus
    for outcome in pooled.result.adapters[::3]:
        assert outcome.result is not None
        for worker in ("0", "1"):
            values = {"job": "swayscope", "run_id": outcome.result.run_id, "worker": worker}
            exprs = dq.dashboard_exprs_by_panel(
                values=values, rows=(dq.SWEEP_ROW, dq.WORKER_ROW)
            )
            assert len(exprs) >= 10
            empty = [f"{title} [{ref}]: {expr}" for title, ref, expr in exprs
                     if not prometheus.query(expr)]
            assert not empty, "queries without data:\n" + "\n".join(empty)
    by_adapter = prometheus.query("swayscope_sweep_adapter_progress_ratio")
    assert sorted(r["metric"]["adapter"] for r in by_adapter) == LABELS


# -- faults -----------------------------------------------------------------------------------


class KillWorkerOneOfThePool(Recorder):
    """Kills worker 1 of the pool ``pids()`` names (SIGKILL) right after the first part is
    sent to it: the part is lost with the worker, whatever it was doing."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: Callable[[], list[int]] | None = None
        self.killed = False

    def export(self, event: Any) -> None:
        super().export(event)
        if (
            not self.killed and self.pids is not None and isinstance(event, WorkerLoad)
            and event.worker == "1" and event.in_flight > 0
        ):
            self.killed = True
            os.kill(self.pids()[1], signal.SIGKILL)


@pytest.fixture(scope="module")
def faulted(
    ray_address: str, tiny_model: TinyModelPaths, checkpoints: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SweepResult, KillWorkerOneOfThePool]]:
    """Three checkpoints and a broken one (``step-00001``: step 2's folder with garbage for
    weights, so its config reads and the swap fails on the worker) on two workers; worker
    1's process is killed as the first part is sent to it."""
    from swayscope.suite.spec import load_suite_text
    from swayscope.suite.sweep.adapters import order_adapters
    from swayscope.suite.sweep.pool import PoolRunner
    from swayscope.suite.sweep.runner import run_sweep

    folder = tmp_path_factory.mktemp("faults")
    for step in ("step-00000", "step-00002", "step-00004"):
        (folder / step).symlink_to(checkpoints / step)
    broken = folder / "step-00001"
    shutil.copytree(checkpoints / "step-00002", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    killer = KillWorkerOneOfThePool()
    inst = BackendInstrumentation(cache_maxsize=4096, exporters=[killer])
    loaded = load_suite_text(SUITE.format(base=tiny_model.base_dir, workers=POOL))
    ordered, order = order_adapters(sorted(folder.iterdir()))
    runner = PoolRunner(loaded, inst)

    def pids() -> list[int]:
        assert runner.backend is not None
        return runner.backend.pool.pids()

    killer.pids = pids
    try:
        result = run_sweep(loaded, ordered, runner, inst, order=order)
    finally:
        if runner.backend is not None:
            runner.backend.close()  # the cluster's CPUs go back for the other tests' pools
        inst.close()
    yield result, killer


def test_a_worker_killed_mid_sweep_costs_only_its_part(
    faulted: tuple[SweepResult, KillWorkerOneOfThePool], in_process: SweepResult
) -> None:
    result, killer = faulted
    assert killer.killed
    failed = [e for e in killer.events if isinstance(e, WorkerFailed)]
    assert failed and failed[0].worker == "1"
    good = ["step-00000", "step-00002", "step-00004"]
    assert {o.adapter.label: o.status for o in result.adapters} == {
        **dict.fromkeys(good, "complete"), "step-00001": "error"
    }
    # The lost part was computed again (on worker 0, with its adapter attached there first):
    # every run has the in-process numbers, and the loss is in the run that had the part.
    assert_same_scores(result, in_process, good)
    assert result.backend_stats["worker_failures"] >= 1
    lost_in = [o for o in result.adapters
               if o.result and o.result.models["workers"]["failures"] > 0]
    assert len(lost_in) == 1 and lost_in[0].result is not None
    assert lost_in[0].result.models["workers"]["home"] == "1"
    # The base view's work is the same whoever computed it.
    assert result.backend_stats["base_forward_passes"] == (
        in_process.backend_stats["base_forward_passes"]
    )


def test_a_swap_that_fails_on_a_worker_is_an_error_row_and_the_others_go_on(
    faulted: tuple[SweepResult, KillWorkerOneOfThePool],
) -> None:
    result, _ = faulted
    (row,) = [o for o in result.adapters if o.adapter.label == "step-00001"]
    assert row.status == "error" and row.result is None and row.error is not None
    assert row.error.startswith("worker ") and "cannot attach adapter" in row.error
    assert result.status == "complete" and result.exit_code == 2
    # One pool for the whole sweep: the failure cost no worker's base model.
    assert len({pid for o in result.adapters if o.result
                for pid in (w["pid"] for w in o.result.models["workers"]["workers"])}) == 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_keeps_the_finished_adapters_and_leaves_nothing_running(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths, checkpoints: Path
) -> None:
    """``swayscope sweep --ray`` on a suite long enough to stop in the middle: three
    adapters on two workers, Ctrl-C once the third one's run started (so one finished
    before it); the runs in progress keep their partial results."""
    prompts = "".join(f"      - 'Prompt number {i} of a long suite'\n" for i in range(300))
    spec = tmp_path / "suite.yaml"
    spec.write_text(
        f"version: 1\nmodels:\n  kind: hf\n  base: {tiny_model.base_dir}\n  device: cpu\n"
        f"defaults:\n  threads: 1\n  max_batch_size: 2\n"
        f"suite:\n  - kind: delta_kl\n    prompts:\n{prompts}"
    )
    out, trace = tmp_path / "out", tmp_path / "t.jsonl"
    proc = popen_swayscope(
        tmp_path, "sweep", str(spec), "--ray", ray_address, "--workers", "2",
        "--adapters", *(str(checkpoints / s) for s in LABELS[:3]), "--out", str(out),
        "--trace", str(trace),
    )
    third = f'"adapter":"{LABELS[2]}"'.encode()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if trace.exists() and third in trace.read_bytes():
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"the third adapter never started: {proc.communicate()[1][-3000:]}")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 2, stderr
    assert time.monotonic() - sent < 60
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["status"] == "interrupted"
    statuses = {a["label"]: a["status"] for a in summary["adapters"]}
    assert statuses[LABELS[2]] == "interrupted", statuses
    assert "complete" in statuses.values(), statuses
    pids: set[int] = set()
    for row in summary["adapters"]:
        if row["result_file"] is None:
            continue
        result = json.loads(Path(row["result_file"]).read_text())
        assert result["status"] == ("complete" if row["status"] == "complete" else "interrupted")
        pids.update(w["pid"] for w in result["models"]["workers"]["workers"])
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "a worker outlived the interrupted sweep"
