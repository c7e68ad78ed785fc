"""What each telemetry exporter adds to a forward call and to a cache hit.

    python bench/bench_overhead.py            # full run (~2 min)
    python bench/bench_overhead.py --quick    # fewer iterations
    python bench/bench_overhead.py --json     # machine-readable
    python bench/bench_overhead.py --baseline OLD/src --rounds 5
                                              # this tree vs another, side by side

The workload is the dummy backend's shape — a run, a probe, a view, scoring
calls through ``BackendInstrumentation.cached()`` / ``cached_batch()`` — with a
trivial compute (returns a float), so what is measured is the exporters' cost:

- ``miss``: ``cached()`` on a new prompt: one model call of one prompt (one
  ``ForwardCall`` + one miss ``CacheLookup`` event);
- ``hit``: ``cached()`` on a cached prompt (one hit ``CacheLookup``);
- ``batch8``: ``cached_batch()`` of 8 new prompts: one model call (one
  ``ForwardCall`` + 8 miss events), reported per call;
- ``mixed``: a probe-like mix, 3 hits per miss, reported as the wall-time ratio;
- ``dummy``: the same mix through ``DummyView`` with its real numpy compute.

Three clocks per run: ``cpu`` is the CPU time of the whole process (every thread)
over the loop and one flush of every exporter, so work an exporter leaves to a
background thread is counted; ``caller`` is the CPU time of the calling thread
over the loop: what is paid on the thread that runs the model, whose model calls
(torch) release the GIL so background threads run meanwhile; ``wall`` is the
loop plus the flush. CPU time is what other jobs on the machine disturb least.

Exporter configurations: none; ``noop`` (ignores every event: the core's cost of
making events); ``jsonl`` (TraceWriter to a temporary file); ``otel``
(OtelExporter with its own TracerProvider and a span exporter that accepts and
discards, so the OTLP encoding and network are excluded); ``prometheus``
(PrometheusExporter, own registry, no HTTP server); ``otel+prometheus``; ``all``
three. Configurations are interleaved; each figure is the median of the repeats;
"added" is the configuration minus none. Targets: ≤ 40 µs added per forward call
with every exporter on, ≤ 3 µs per cache hit with otel + prometheus.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from machine import cpu_model
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from swayscope.backends.dummy import DummyBackend, DummyView
from swayscope.instrumentation import BackendInstrumentation, Event, Exporter
from swayscope.instrumentation.exporters.jsonl import TraceWriter
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

FORWARD_TARGET_US = 40.0
HIT_TARGET_US = 3.0
CONFIGS = ("none", "noop", "jsonl", "otel", "prometheus", "otel+prometheus", "all")
CLOCKS = ("cpu", "caller", "wall")
SHOWN = CONFIGS[1:]

#: workload → config → clock ("cpu", "caller", "wall") → [µs per item, one per repeat]
Results = dict[str, dict[str, dict[str, list[float]]]]


class DiscardSpans(SpanExporter):
    """Accepts every batch and keeps nothing: the processor's cost without the network's."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class NoopExporter(Exporter):
    """Receives every event and does nothing: the core's cost of making events."""

    name = "noop"

    def export(self, event: Event) -> None:
        return None


def make_exporters(config: str, tmp: Path) -> list[Exporter]:
    out: list[Exporter] = []
    if config == "noop":
        out.append(NoopExporter())
    if config in ("jsonl", "all"):
        path = tmp / "trace.jsonl"
        path.unlink(missing_ok=True)
        out.append(TraceWriter(path))
    if config in ("otel", "otel+prometheus", "all"):
        out.append(OtelExporter(span_exporter=DiscardSpans(), flush_timeout_s=60.0))
    if config in ("prometheus", "otel+prometheus", "all"):
        out.append(PrometheusExporter())
    return out


def measure(
    config: str, tmp: Path, workload: Callable[[BackendInstrumentation, int], int], n: int
) -> dict[str, float]:
    """µs per item of one ``workload`` run inside run → probe → view, fresh exporters,
    on each clock (see the module docstring)."""
    inst = BackendInstrumentation(cache_maxsize=n * 8 + 64, exporters=make_exporters(config, tmp))
    try:
        with (
            inst.run(suite="bench", base_model="dummy", adapter="dummy-adapter", total_probes=1),
            inst.probe("bench_probe", "delta_kl") as probe,
            inst.view("ft"),
        ):
            gc.collect()
            gc.disable()
            try:
                t0, p0, c0 = time.perf_counter(), time.process_time(), time.thread_time()
                items = workload(inst, n)
                caller = time.thread_time() - c0
                if not inst.force_flush(60.0):
                    raise RuntimeError(f"{config}: exporters did not flush")
                cpu, wall = time.process_time() - p0, time.perf_counter() - t0
            finally:
                gc.enable()
            probe.status = "pass"
    finally:
        inst.close()
    return {"cpu": cpu / items * 1e6, "caller": caller / items * 1e6, "wall": wall / items * 1e6}


def _compute() -> float:
    return 1.0


def w_miss(inst: BackendInstrumentation, n: int) -> int:
    cached = inst.cached
    for i in range(n):
        cached("next_token_dist", "ft", f"prompt number {i}", 8, _compute)
    return n


def w_hit(inst: BackendInstrumentation, n: int) -> int:
    cached = inst.cached
    cached("next_token_dist", "ft", "the prompt", 8, _compute)
    for _ in range(n):
        cached("next_token_dist", "ft", "the prompt", 8, _compute)
    return n


def w_batch8(inst: BackendInstrumentation, n: int) -> int:
    calls = n // 8
    batch = inst.cached_batch
    for c in range(calls):
        prompts = [f"batch {c} prompt {j}" for j in range(8)]
        batch("next_token_dist", "ft", prompts, 8, lambda idx: [1.0] * len(idx))
    return calls


def w_mixed(inst: BackendInstrumentation, n: int) -> int:
    """Per unit: one new prompt, then it and two earlier ones looked up again."""
    cached = inst.cached
    for i in range(n):
        cached("next_token_dist", "ft", f"mixed {i}", 8, _compute)
        cached("next_token_dist", "ft", f"mixed {i}", 8, _compute)
        cached("next_token_dist", "ft", f"mixed {i // 2}", 8, _compute)
        cached("next_token_dist", "ft", f"mixed {i // 3}", 8, _compute)
    return n


def w_dummy(inst: BackendInstrumentation, n: int) -> int:
    """The dummy backend's real (numpy) compute: the same mix as ``mixed``."""
    view = DummyView(DummyBackend(inst=inst), "ft", 1.0, None, 1.0)
    for i in range(n):
        view.next_token_dist(f"dummy {i}", top_k=8)
        view.next_token_dist(f"dummy {i}", top_k=8)
        view.next_token_dist(f"dummy {i // 2}", top_k=8)
        view.next_token_dist(f"dummy {i // 3}", top_k=8)
    return n


WORKLOADS: dict[str, tuple[Callable[[BackendInstrumentation, int], int], int]] = {
    # name: (workload, items per repeat in the full run)
    "miss": (w_miss, 20_000),
    "hit": (w_hit, 100_000),
    "batch8": (w_batch8, 40_000),
    "mixed": (w_mixed, 10_000),
    "dummy": (w_dummy, 2_000),
}


def run_all(repeats: int, scale: float, workloads: Sequence[str] = tuple(WORKLOADS)) -> Results:
    results: Results = {w: {c: {k: [] for k in CLOCKS} for c in CONFIGS} for w in workloads}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(repeats):  # interleave configs so drift hits them all alike
            for wname in workloads:
                fn, n = WORKLOADS[wname]
                for config in CONFIGS:
                    us = measure(config, tmp, fn, max(8, int(n * scale)))
                    for clock in CLOCKS:
                        results[wname][config][clock].append(us[clock])
    return results


def merge(parts: Sequence[Results]) -> Results:
    """One Results holding every repeat of ``parts``."""
    out: Results = {}
    for part in parts:
        for w, configs in part.items():
            for c, series in configs.items():
                slot = out.setdefault(w, {}).setdefault(c, {k: [] for k in CLOCKS})
                for key, values in series.items():
                    slot[key].extend(values)
    return out


def med(results: Results, w: str, c: str, key: str = "cpu") -> float:
    return statistics.median(results[w][c][key])


def added(results: Results, w: str, c: str, key: str = "cpu") -> float:
    return med(results, w, c, key) - med(results, w, "none", key)


ROWS: dict[tuple[str, str], str] = {
    ("miss", "cpu"): "per forward call, 1 prompt (`cached()` miss): CPU, all threads",
    ("miss", "caller"): "… CPU of the calling thread",
    ("miss", "wall"): "… wall time",
    ("batch8", "cpu"): "per forward call, batch of 8 (`cached_batch()`): CPU, all threads",
    ("batch8", "caller"): "… CPU of the calling thread",
    ("hit", "cpu"): "per cache hit (`cached()` hit): CPU, all threads",
}


def table(results: Results, title: str) -> list[str]:
    lines = [
        f"| µs added over no exporter{title} | " + " | ".join(SHOWN) + " | none (absolute µs) |",
        "|---|" + "---:|" * (len(SHOWN) + 1),
    ]
    for (w, key), label in ROWS.items():
        cells = " | ".join(f"{added(results, w, c, key):.2f}" for c in SHOWN)
        lines.append(f"| {label} | {cells} | {med(results, w, 'none', key):.2f} |")
    return lines


def machine(how: str) -> str:
    return (
        f"Machine: `lscpu` Model name **{cpu_model()}**, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release().split('-')[0]} {platform.machine()}, "
        f"Python {platform.python_version()}. Command: `python bench/bench_overhead.py{how}`."
    )


def summary(results: Results) -> list[str]:
    """The wall-time ratios of the mixed workloads and the targets."""

    def ratios(w: str) -> str:
        none = med(results, w, "none", "wall")
        return ", ".join(f"{c} {med(results, w, c, 'wall') / none:.2f}x" for c in SHOWN)

    fwd_caller, fwd_cpu = added(results, "miss", "all", "caller"), added(results, "miss", "all")
    hit_op = added(results, "hit", "otel+prometheus")

    def verdict(us: float, target: float) -> str:
        return f"{us:.1f} µs ({'met' if us <= target else 'NOT met'}, target <= {target:g})"

    return [
        "Wall-time ratio, config / none, 1 miss : 3 hits: trivial compute "
        f"({med(results, 'mixed', 'none', 'wall'):.1f} µs per miss + 3 hits): "
        f"{ratios('mixed')}; the dummy backend's numpy compute "
        f"({med(results, 'dummy', 'none', 'wall'):.1f} µs per miss + 3 hits): {ratios('dummy')}.",
        "",
        "Targets: forward call with every exporter on, on the calling thread "
        f"{verdict(fwd_caller, FORWARD_TARGET_US)}, all threads "
        f"{verdict(fwd_cpu, FORWARD_TARGET_US)}; cache hit with otel + prometheus "
        f"{verdict(hit_op, HIT_TARGET_US)} (every exporter on: "
        f"{added(results, 'hit', 'all'):.1f} µs).",
    ]


def report(results: Results, repeats: int, scale: float) -> str:
    how = f" (median of {repeats}, scale {scale:g})"
    return "\n".join([machine(how), "", *table(results, ""), "", *summary(results)])


def compare(baseline_src: Path, rounds: int, scale: float) -> str:
    """This tree and ``baseline_src`` alternately, one repeat per process and round."""
    here = Path(__file__).resolve()
    trees = {"baseline": baseline_src.resolve(), "this tree": here.parents[1] / "src"}
    parts: dict[str, list[Results]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(here.parent)])}
            out = subprocess.run(
                [sys.executable, str(here), "--json", "--repeats", "1", "--scale", str(scale)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            parts[name].append(json.loads(out))
    lines = [
        machine(f" --baseline {baseline_src} --rounds {rounds} --scale {scale:g}"),
        f"Each round runs each tree once, in turn; figures are medians of {rounds} rounds.",
        "",
    ]
    for name, runs in parts.items():
        merged = merge(runs)
        lines += [*table(merged, f" ({name})"), "", *summary(merged), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer iterations, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--scale", type=float, default=None, help="multiply the iterations by this")
    ap.add_argument("--json", action="store_true", help="print raw µs per item as JSON")
    ap.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="with --json: comma-separated subset"
    )
    ap.add_argument("--baseline", type=Path, help="another tree's src/ to compare with")
    ap.add_argument("--rounds", type=int, default=5, help="with --baseline: rounds")
    args = ap.parse_args(argv)
    scale = args.scale or (0.1 if args.quick else 1.0)
    if args.baseline is not None:
        print(compare(args.baseline, args.rounds, scale))
        return 0
    repeats = args.repeats or (3 if args.quick else 5)
    if args.json:
        print(json.dumps(run_all(repeats, scale, args.workloads.split(","))))
        return 0
    results = run_all(repeats, scale)
    print(report(results, repeats, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
