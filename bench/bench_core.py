"""Cost of the instrumentation core itself: µs per lookup, with a trivial compute.

    python bench/bench_core.py            # full run (~10 s)
    python bench/bench_core.py --quick    # fewer iterations
    python bench/bench_core.py --json     # machine-readable

Measures ``BackendInstrumentation.cached()`` hits and misses with no exporter
and with the JSONL exporter (to a temporary file, one flushed line per
lookup), and ``cached_batch()`` per prompt for batches of 32, all misses and
all hits. Each figure is the best of several repeats (least disturbed by the
rest of the machine). The hit path with no exporter must stay at or under 5 µs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine import cpu_model

from swayscope.instrumentation import BackendInstrumentation

HIT_BUDGET_US = 5.0
BATCH = 32


def best_us(run: Callable[[], int], repeats: int) -> float:
    """Best µs per item over ``repeats`` runs; ``run`` returns how many items it did."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = run()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def make_inst(trace: Path | None, maxsize: int) -> BackendInstrumentation:
    if trace is not None:
        trace.unlink(missing_ok=True)
    return BackendInstrumentation(cache_maxsize=maxsize, trace_path=trace)


def bench_hit(trace: Path | None, n: int, repeats: int) -> float:
    inst = make_inst(trace, 16)

    def compute() -> float:
        return 1.0

    inst.cached("next_token_dist", "base", "the prompt", 8, compute)

    def run() -> int:
        cached = inst.cached
        for _ in range(n):
            cached("next_token_dist", "base", "the prompt", 8, compute)
        return n

    try:
        return best_us(run, repeats)
    finally:
        inst.close()


def bench_miss(trace: Path | None, n: int, repeats: int) -> float:
    prompts = [f"prompt number {i}" for i in range(n)]

    def compute() -> float:
        return 1.0

    best = float("inf")
    for _ in range(repeats):
        inst = make_inst(trace, n + 1)  # fresh cache each repeat, no evictions
        cached = inst.cached
        t0 = time.perf_counter()
        for p in prompts:
            cached("next_token_dist", "base", p, 8, compute)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        inst.close()
    return best


def bench_batch(trace: Path | None, n_batches: int, repeats: int, hits: bool) -> float:
    batches = [[f"batch {b} prompt {i}" for i in range(BATCH)] for b in range(n_batches)]

    def compute(idx: list[int]) -> list[float]:
        return [1.0] * len(idx)

    best = float("inf")
    for _ in range(repeats):
        inst = make_inst(trace, n_batches * BATCH + 1)
        cached_batch = inst.cached_batch
        if hits:
            for batch in batches:
                cached_batch("next_token_dist", "base", batch, 8, compute)
        t0 = time.perf_counter()
        for batch in batches:
            cached_batch("next_token_dist", "base", batch, 8, compute)
        best = min(best, (time.perf_counter() - t0) / (n_batches * BATCH) * 1e6)
        inst.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    repeats = 3 if args.quick else 5
    n_hit, n_miss, n_batches = int(200_000 * scale), int(40_000 * scale), int(1_000 * scale)

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "bench.jsonl"
        for label, path in (("none", None), ("jsonl", trace)):
            results[f"hit_{label}"] = bench_hit(
                path, n_hit if path is None else n_hit // 4, repeats
            )
            results[f"miss_{label}"] = bench_miss(path, n_miss, repeats)
            results[f"batch_miss_{label}"] = bench_batch(path, n_batches, repeats, hits=False)
            results[f"batch_hit_{label}"] = bench_batch(path, n_batches, repeats, hits=True)

    ratios = {
        "hit_jsonl_over_none": results["hit_jsonl"] / results["hit_none"],
        "miss_jsonl_over_none": results["miss_jsonl"] / results["miss_none"],
        "miss_over_hit_none": results["miss_none"] / results["hit_none"],
        "batch_miss_over_cached_miss_none": results["batch_miss_none"] / results["miss_none"],
        "batch_hit_over_cached_hit_none": results["batch_hit_none"] / results["hit_none"],
    }
    machine = {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    ok = results["hit_none"] <= HIT_BUDGET_US
    if args.json:
        print(json.dumps({"us": results, "ratios": ratios, "machine": machine, "ok": ok}))
        return 0 if ok else 1

    print(f"machine: {machine['cpu']} · Python {machine['python']} · {machine['platform']}")
    print(f"{'measure (µs per lookup / per prompt)':44} {'no exporter':>12} {'JSONL':>10}")
    for key, title in (
        ("hit", "cached() hit"),
        ("miss", "cached() miss (trivial compute)"),
        ("batch_miss", f"cached_batch({BATCH}) all misses, per prompt"),
        ("batch_hit", f"cached_batch({BATCH}) all hits, per prompt"),
    ):
        print(f"{title:44} {results[key + '_none']:12.2f} {results[key + '_jsonl']:10.2f}")
    print("ratios:")
    for key, value in ratios.items():
        print(f"  {key:36} {value:6.2f}x")
    verdict = "OK" if ok else "OVER BUDGET"
    print(
        f"hit path, no exporter: {results['hit_none']:.2f} µs (budget {HIT_BUDGET_US} µs) {verdict}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
