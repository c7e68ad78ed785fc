"""Benchmark the Ray pool: in process vs 1 and 2 CPU workers (1 torch thread each).

Tiny offline model, a miss-heavy workload: every round looks the prompts up under a view
never seen before (``scaled(λ)`` with a new λ), so every lookup is a miss and every
prompt is computed, and no worker reuses a stored prefix. The three backends run
interleaved, round after round, so a burst of load from other processes hits all alike;
best and median of the rounds are reported.

Prints a Markdown report (``docs/scaling.md`` keeps one):

- throughput (prompts/s) of one large call per backend, and the ratios;
- the pool's cost per forward call: a 1-worker pool minus in process, per batch size
  (dispatch, pickling, the worker's reply, putting records back), in µs;
- the smallest batch at which that cost is under 10 % of the call (amortised), and the
  smallest at which 2 workers beat one process.

    python bench/bench_ray.py [--prompts 256] [--rounds 5] [--batches 1,2,4,8,16,32,64]

``--sweep``: a checkpoint sweep instead (the tiny adapter trained for 40 steps, checkpoints at
0, 5, 10, 20 and 40; the demo suite on each): in process, then on a pool of 1 and of 2
workers (each pool started once, its base loaded once per worker; the driver's cache
emptied before each sweep), interleaved round after round. Prints the sweeps' wall time,
their forward work (which must be the same everywhere), how many adapters ran at once,
and the largest score difference from the in-process sweep. ``--sweep-prompts N`` gives
delta_kl N prompts of the corpus instead of its 16: more work per adapter.

    python bench/bench_ray.py --sweep [--rounds 3] [--sweep-prompts 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a loopback-only cluster

import torch

from swayscope.backends.hf import HFBackend
from swayscope.backends.ray import RayBackend
from swayscope.backends.tiny import TINY_LORA_SHAPE, build_tiny, package_text, tiny_adapter_plan
from swayscope.instrumentation import (
    BackendInstrumentation,
    Event,
    Exporter,
    RunEnded,
    RunStarted,
    WorkerCallEnded,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

#: Amortised: the pool's cost per call under this share of the call's in-process time.
AMORTISED_SHARE = 0.10
_lambdas = itertools.count(1)


def make_prompts(n: int) -> list[str]:
    """``n`` distinct prompts of about 10 to 60 tokens, cut from the packaged corpus."""
    paragraphs = [p.replace("\n", " ") for p in package_text("corpus.txt").split("\n\n")]
    paragraphs = [p for p in paragraphs if len(p) > 80]
    prompts = []
    for i in range(n):
        para = paragraphs[i % len(paragraphs)]
        length = 60 + (i * 37) % 200
        cut = para[(i // len(paragraphs)) % 20 :][:length]
        prompts.append(f"{i}: " + (cut[: cut.rfind(" ")] if " " in cut[20:] else cut))
    return prompts


def fresh_view_call(backend: Any, prompts: list[str]) -> Callable[[], None]:
    """One call over ``prompts`` under a view no one has seen: all misses."""

    def call() -> None:
        lam = 0.5 + next(_lambdas) * 1e-6
        with backend.scaled(lam) as view:
            view.next_token_dist_batch(prompts, top_k=16)

    return call


class WorkerMemory(Exporter):
    """The largest resident memory each worker reported after a call."""

    def __init__(self) -> None:
        self.rss: dict[str, int] = {}

    def export(self, event: Event) -> None:
        if isinstance(event, WorkerCallEnded):
            self.rss[event.worker] = max(self.rss.get(event.worker, 0), event.memory_bytes)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def same_view_call(backend: Any, prompts: list[str]) -> Callable[[], None]:
    """One call over ``prompts`` under the fine-tuned view: all hits once it was computed."""

    def call() -> None:
        with backend.ft() as view:
            view.next_token_dist_batch(prompts, top_k=16)

    return call


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds of each function, run interleaved after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


#: The sweep mode's checkpoints: the tiny adapter's training steps (as bench/bench_sweep.py).
SWEEP_STEPS = 40
SWEEP_SAVE_AT = (0, 5, 10, 20)
#: The sweep's forward work, summed over its adapters' own counters.
SWEEP_COUNTS = ("forward_calls", "forward_passes", "base_forward_passes", "cache_hits",
                "cache_misses")


class RunTimes(Exporter):
    """When each run started and ended: how many ran at once."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.ended: dict[str, int] = {}

    def export(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started[event.run_id] = event.start_ns
        elif isinstance(event, RunEnded):
            self.ended[event.run_id] = event.end_ns

    def most_at_once(self) -> int:
        edges = sorted(
            [(t, 1) for t in self.started.values()] + [(t, -1) for t in self.ended.values()]
        )
        live = most = 0
        for _, step in edges:
            live += step
            most = max(most, live)
        return most

    def reset(self) -> None:
        self.started.clear()
        self.ended.clear()


def sweep_bench(rounds: int, prompts: int) -> None:
    """The ``--sweep`` mode (see the module doc); ``prompts``: delta_kl's (0: its own)."""
    import ray

    from swayscope.suite.demo import demo_suite_yaml
    from swayscope.suite.runner import build_backend
    from swayscope.suite.spec import WorkersSpec, load_suite_text
    from swayscope.suite.sweep.adapters import order_adapters
    from swayscope.suite.sweep.pool import PoolRunner
    from swayscope.suite.sweep.result import SweepResult
    from swayscope.suite.sweep.runner import InProcessRunner, run_sweep
    from swayscope.training.lora import train_lora

    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-ray-sweep-") as tmp:
        root = Path(tmp)
        paths = build_tiny(root / "tiny", seed=0)
        trained = train_lora(
            paths.base_dir, package_text("finetune.txt"), root / "ckpt",
            shape=TINY_LORA_SHAPE,
            plan=tiny_adapter_plan(0, steps=SWEEP_STEPS, save_at=SWEEP_SAVE_AT),
        )
        checkpoints = [trained.checkpoints[s] for s in sorted(trained.checkpoints)]
        adapters, order = order_adapters(checkpoints)
        text = demo_suite_yaml(paths.base_dir, checkpoints[0])
        if prompts:
            text = text.replace(
                "  - kind: delta_kl\n",
                f"  - kind: delta_kl\n    prompts: {json.dumps(make_prompts(prompts))}\n",
            )
        loaded = load_suite_text(text, "demo")
        spec = loaded.spec
        loaded.spec = spec.model_copy(
            update={"defaults": spec.defaults.model_copy(update={"threads": 1})}
        )

        def pooled(workers: int) -> Any:
            models = loaded.spec.models.model_copy(
                update={"workers": WorkersSpec(count=workers)}
            )
            times = RunTimes()
            inst = BackendInstrumentation(cache_maxsize=4096, exporters=[times])
            return build_backend(models, loaded.spec.defaults, inst, adapter_name=adapters[0].label)

        starts: dict[str, float] = {}
        pools: dict[str, Any] = {}
        for workers in (1, 2):
            name = f"{workers} worker{'s' if workers > 1 else ''}"
            t0 = time.perf_counter()
            pools[name] = pooled(workers)
            starts[name] = time.perf_counter() - t0

        def sweep(name: str) -> tuple[SweepResult, int]:
            if name == "in process":
                times = RunTimes()
                inst = BackendInstrumentation(cache_maxsize=4096, exporters=[times])
                result = run_sweep(loaded, adapters, InProcessRunner(loaded, inst), inst,
                                   order=order)
                inst.close()
                return result, times.most_at_once()
            backend = pools[name]
            backend.inst.cache.clear()
            (times,) = [e for e in backend.inst.exporters if isinstance(e, RunTimes)]
            times.reset()
            runner = PoolRunner(loaded, backend.inst, backend=backend)
            result = run_sweep(loaded, adapters, runner, backend.inst, order=order)
            return result, times.most_at_once()

        names = ["in process", *pools]
        walls: dict[str, list[float]] = {n: [] for n in names}
        loads: dict[str, list[float]] = {n: [] for n in names}
        last: dict[str, tuple[SweepResult, int]] = {}
        try:
            for n in names:  # warm-up
                sweep(n)
            for _ in range(rounds):
                for n in names:
                    last[n] = sweep(n)
                    walls[n].append(last[n][0].wall_s)
                    loads[n].append(sum(o.load_s for o in last[n][0].adapters))
            cache = pools["2 workers"].inst.cache
            entries, cache_bytes = len(cache), cache.nbytes
        finally:
            for backend in pools.values():
                backend.close()
            ray.shutdown()

    def work(result: SweepResult) -> dict[str, int]:
        return {k: sum(int(o.stats.get(k, 0)) for o in result.adapters) for k in SWEEP_COUNTS}

    def scores(result: SweepResult) -> dict[tuple[str, str], float | None]:
        return {(name, p.label): p.score for name in result.probe_names()
                for p in result.points(name)}

    want = scores(last["in process"][0])
    print("## A checkpoint sweep on the pool (bench/bench_ray.py --sweep)\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; Python "
          f"{platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}. "
          f"Tiny model (build_tiny), {len(adapters)} checkpoints of the tiny adapter (steps "
          f"{', '.join(str(a.step) for a in adapters)}), the demo suite on each"
          + (f" (delta_kl on {prompts} prompts)" if prompts else "") + "; CPU float32, 1 "
          f"torch thread per process; local Ray cluster of 3 logical CPUs (both pools fit); "
          f"{rounds} interleaved rounds after a warm-up, best (median). Starting the pools "
          f"(every worker loads the base once): "
          + ", ".join(f"{n} {s:.1f} s" for n, s in starts.items()) + ".\n")
    print("| sweep | wall s | of which loading and swaps s | model calls | prompts computed "
          "| base-view prompts | hit rate | adapters at once | max score difference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        result, at_once = last[n]
        w = work(result)
        lookups = w["cache_hits"] + w["cache_misses"]
        got = scores(result)
        diff = max(abs((got[k] or 0.0) - (want[k] or 0.0)) for k in want)
        print(f"| {n} | {min(walls[n]):.2f} ({statistics.median(walls[n]):.2f}) | "
              f"{statistics.median(loads[n]):.2f} | {w['forward_calls']} | "
              f"{w['forward_passes']} | {w['base_forward_passes']} | "
              f"{w['cache_hits'] / lookups:.1%} | {at_once} | {diff:.1e} |")
    print(f"\nThe driver's cache after a sweep (2 workers): {entries} entries, "
          f"{cache_bytes / 2**20:.1f} MiB ({cache_bytes / max(entries, 1) / 1024:.1f} KiB per "
          "entry: a forward record, the top 256 of the next-token distribution, and each "
          "token's log-probability for the per-token ops).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--sweep", action="store_true", help="a checkpoint sweep instead")
    parser.add_argument("--sweep-prompts", type=int, default=0)
    args = parser.parse_args()
    if args.sweep:
        torch.set_num_threads(1)
        sweep_bench(args.rounds, args.sweep_prompts)
        return
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(1)

    import ray

    # 3 logical CPUs: the 1-worker pool and the 2-worker pool are placed side by side (they
    # never compute at the same time: the rounds run one backend after another).
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as root:
        measure(Path(root), args, batches)


def measure(root: Path, args: argparse.Namespace, batches: list[int]) -> None:
    """Build the tiny model in ``root``, time the three backends, print the report."""
    import ray

    paths = build_tiny(root, seed=0)
    prompts = make_prompts(args.prompts)
    common: dict[str, Any] = {"device": "cpu", "threads": 1, "max_batch_size": 64}
    t0 = time.perf_counter()
    local = HFBackend(paths.base_dir, paths.adapter_dir, **common)
    one = RayBackend(paths.base_dir, paths.adapter_dir, workers=1, **common)
    two = RayBackend(paths.base_dir, paths.adapter_dir, workers=2, **common)
    startup_s = time.perf_counter() - t0
    backends = {"in process": local, "1 worker": one, "2 workers": two}
    memory = WorkerMemory()
    two.inst.add_exporter(memory)
    try:
        big = timed({k: fresh_view_call(b, prompts) for k, b in backends.items()}, args.rounds)
        hits = timed({k: same_view_call(b, prompts) for k, b in backends.items()}, args.rounds)
        entries, cache_bytes = len(two.inst.cache), two.inst.cache.nbytes
        driver_rss = rss_bytes()
        per_batch: dict[int, dict[str, tuple[float, float]]] = {}
        calls: dict[int, float] = {}
        for n in batches:
            before = one.inst.stats.forward_calls
            per_batch[n] = timed(
                {k: fresh_view_call(b, prompts[:n]) for k, b in backends.items()}, args.rounds
            )
            calls[n] = (one.inst.stats.forward_calls - before) / (args.rounds + 1)
    finally:
        for b in backends.values():
            b.close()
        ray.shutdown()

    tokens = sum(len(local.tokenize(p)) for p in prompts)
    print("## Ray pool (bench/bench_ray.py)\n")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; Python "
          f"{platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}. "
          f"Tiny model (build_tiny), CPU float32, 1 torch thread per process (driver and "
          f"each worker); local Ray cluster (3 logical CPUs, so both pools fit; one backend "
          f"computes at a time); {args.rounds} interleaved rounds after a warm-up, best "
          f"(median). Starting the three backends took {startup_s:.1f} s.\n")
    print(f"### Throughput: one call of {len(prompts)} prompts ({tokens} tokens), all misses\n")
    print("| backend | wall s | prompts/s | vs in process |")
    print("|---|---:|---:|---:|")
    base_best = big["in process"][0]
    for name, (best, med) in big.items():
        print(f"| {name} | {best:.3f} ({med:.3f}) | {len(prompts) / best:.0f} "
              f"({len(prompts) / med:.0f}) | {base_best / best:.2f}x |")
    print(f"\n2 workers vs 1 worker: {big['1 worker'][0] / big['2 workers'][0]:.2f}x.\n")
    print(f"### The same call again: all {len(prompts)} lookups hit the driver's cache\n")
    print("| backend | wall ms | µs per lookup |")
    print("|---|---:|---:|")
    for name, (best, med) in hits.items():
        print(f"| {name} | {best * 1e3:.2f} ({med * 1e3:.2f}) | {best / len(prompts) * 1e6:.1f} |")
    per_entry = cache_bytes / entries if entries else 0.0
    print(f"\nDriver's cache after the run (2-worker pool; an entry is a forward record: the "
          f"top 256 of the next-token distribution; the instrumentation's default LRU of 256 "
          f"entries): {entries} entries, {cache_bytes / 2**20:.1f} MiB, "
          f"{per_entry / 1024:.1f} KiB per entry. Driver process (three backends, two "
          f"holding no model): {driver_rss / 2**20:.0f} MiB resident; each worker of the "
          f"2-worker pool: "
          + ", ".join(f"{m / 2**20:.0f} MiB" for _, m in sorted(memory.rss.items()))
          + " resident.\n")
    print("### Cost of the pool per forward call, by batch size (all misses)\n")
    print("A lookup call of a batch is planned into forward calls (token budget); the pool "
          "pays its cost once per forward call.\n")
    print("| batch | forward calls | in process ms | 1 worker ms | 2 workers ms | pool cost "
          "µs per forward call (1 worker - in process) | share of the call |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    amortised: int | None = None
    break_even: int | None = None
    for n, res in per_batch.items():
        local_s, one_s, two_s = res["in process"][0], res["1 worker"][0], res["2 workers"][0]
        cost = (one_s - local_s) / calls[n]
        share = (one_s - local_s) / local_s
        if amortised is None and share <= AMORTISED_SHARE:
            amortised = n
        if break_even is None and two_s < local_s:
            break_even = n
        print(f"| {n} | {calls[n]:g} | {local_s * 1e3:.2f} | {one_s * 1e3:.2f} | "
              f"{two_s * 1e3:.2f} | "
              f"{cost * 1e6:.0f} | {share:.0%} |")
    print(f"\nAmortised (pool cost ≤ {AMORTISED_SHARE:.0%} of the call) from batch "
          f"{amortised if amortised is not None else f'> {batches[-1]}'}; 2 workers beat "
          f"one process from batch {break_even if break_even is not None else f'> {batches[-1]}'}.")


if __name__ == "__main__":
    main()
