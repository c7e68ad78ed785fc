"""What each telemetry exporter adds to a forward call and to a cache hit.

    python bench/bench_overhead.py            # full run (~1 min)
    python bench/bench_overhead.py --quick    # fewer iterations
    python bench/bench_overhead.py --json     # machine-readable

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

Exporter configurations: none; ``jsonl`` (TraceWriter to a temporary file);
``otel`` (OtelExporter with its own TracerProvider, BatchSpanProcessor and a
span exporter that accepts and discards, so the OTLP encoding and network are
excluded: they run on the processor's thread); ``prometheus``
(PrometheusExporter, own registry, no HTTP server); ``all`` three together.
Each figure is the best of several repeats; "added" is the configuration minus
none. Targets: ≤ 25 µs added per forward call with every exporter on, ≤ 3 µs per
cache hit.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
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

FORWARD_TARGET_US = 25.0
HIT_TARGET_US = 3.0
CONFIGS = ("none", "noop", "jsonl", "otel", "prometheus", "otel+prometheus", "all")


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
        out.append(OtelExporter(span_exporter=DiscardSpans()))
    if config in ("prometheus", "otel+prometheus", "all"):
        out.append(PrometheusExporter())
    return out


def measure(
    config: str, tmp: Path, workload: Callable[[BackendInstrumentation, int], int], n: int
) -> float:
    """µs per item of one ``workload`` run inside run → probe → view, fresh exporters."""
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
                t0 = time.perf_counter()
                items = workload(inst, n)
                elapsed = time.perf_counter() - t0
            finally:
                gc.enable()
            probe.status = "pass"
    finally:
        inst.close()
    return elapsed / items * 1e6


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


def run_all(repeats: int, scale: float) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {w: {} for w in WORKLOADS}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(repeats):  # interleave configs so drift hits them all alike
            for wname, (fn, n) in WORKLOADS.items():
                for config in CONFIGS:
                    us = measure(config, tmp, fn, max(8, int(n * scale)))
                    prev = results[wname].get(config, float("inf"))
                    results[wname][config] = min(prev, us)
    return results


def report(results: dict[str, dict[str, float]], repeats: int, scale: float) -> str:
    none = {w: r["none"] for w, r in results.items()}
    shown = ("noop", "jsonl", "otel", "prometheus", "otel+prometheus", "all")

    def added(w: str, c: str) -> float:
        return results[w][c] - none[w]

    lines = [
        f"Machine: `lscpu` Model name **{cpu_model()}**, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release().split('-')[0]} {platform.machine()}, "
        f"Python {platform.python_version()}. Command: `python bench/bench_overhead.py`"
        f" (best of {repeats}, scale {scale:g}).",
        "",
        "| µs added over no exporter | " + " | ".join(shown) + " | none (absolute µs) |",
        "|---|" + "---:|" * (len(shown) + 1),
    ]
    labels = {
        "miss": "per forward call, 1 prompt (`cached()` miss)",
        "batch8": "per forward call, batch of 8 (`cached_batch()`)",
        "hit": "per cache hit (`cached()` hit)",
    }
    for w, label in labels.items():
        cells = " | ".join(f"{added(w, c):.2f}" for c in shown)
        lines.append(f"| {label} | {cells} | {none[w]:.2f} |")
    def ratios(w: str) -> str:
        return ", ".join(f"{c} {results[w][c] / none[w]:.2f}x" for c in shown)

    fwd_all, hit_all = added("miss", "all"), added("hit", "all")
    fwd_op, hit_op = added("miss", "otel+prometheus"), added("hit", "otel+prometheus")
    lines += [
        "",
        "`noop` is an exporter that ignores every event: the core's own cost of making",
        "events once any exporter is attached (included in every other column).",
        "",
        "Wall-time ratio, config / none, 1 miss : 3 hits: trivial compute "
        f"({none['mixed']:.1f} µs per miss + 3 hits): {ratios('mixed')}; the dummy "
        f"backend's numpy compute ({none['dummy']:.1f} µs per miss + 3 hits): "
        f"{ratios('dummy')}.",
        "",
        f"Targets: forward call with every exporter on {fwd_all:.1f} µs "
        f"({'met' if fwd_all <= FORWARD_TARGET_US else 'NOT met'}, target "
        f"<= {FORWARD_TARGET_US:g}); cache hit with every exporter on {hit_all:.1f} µs "
        f"({'met' if hit_all <= HIT_TARGET_US else 'NOT met'}, target <= {HIT_TARGET_US:g}); "
        f"otel + prometheus: forward {fwd_op:.1f} µs, hit {hit_op:.1f} µs.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer iterations, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print raw µs per item as JSON")
    args = ap.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    repeats = args.repeats or (3 if args.quick else 5)
    results = run_all(repeats, scale)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report(results, repeats, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
