"""A checkpoint sweep two ways: one `swayscope sweep` against N separate `swayscope run`s.

The tiny adapter is trained for 40 steps with checkpoints at 0, 5, 10, 20 and 40 (as
``swayscope tiny-model DIR --checkpoints 5`` does); the demo suite (null_adapter,
delta_kl, adapter_ablation, prompt_collapse, perplexity_shift) runs on each. Every
repeat runs the sweep and then the N runs (interleaved), each a fresh process pinned to
one thread (OMP_NUM_THREADS=1). Prints the medians (best in brackets) of the wall time of
the whole job, and the forward work: model calls, prompts computed, of which base-view
prompts, and the cache hit rate. Then the last sweep's summary table, as the terminal
showed it.

    python bench/bench_sweep.py [--repeats 3] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

from swayscope.backends.tiny import CHECKPOINTS_DIRNAME, build_tiny, train_tiny_checkpoints
from swayscope.suite.demo import demo_suite_yaml

CHECKPOINTS = 5
COUNTERS = ("forward_calls", "forward_passes", "base_forward_passes", "cache_hits",
            "cache_misses")


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout, elapsed


def totals(stats: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(int(s[k]) for s in stats) for k in COUNTERS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--home", type=Path, default=None, help="folder for the tiny model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        measure(Path(tmp), args.home, args.repeats)


def measure(work: Path, home: Path | None, repeats: int) -> dict[str, list[float]]:
    """Train the checkpoints and time the sweep against the runs, in ``work`` (the tiny
    model under ``home``, else in ``work`` too); print the table and the last summary, and
    return each job's wall times (``sweep``, ``runs``)."""
    home = (home or work) / "tiny-model"
    paths = build_tiny(home, seed=0)
    t0 = time.perf_counter()
    trained = train_tiny_checkpoints(home, CHECKPOINTS, seed=0)
    train_s = time.perf_counter() - t0
    checkpoints = [trained.checkpoints[s] for s in sorted(trained.checkpoints)]
    sweep_spec = work / "suite.yaml"
    sweep_spec.write_text(demo_suite_yaml(paths.base_dir, checkpoints[0]))
    run_specs = []
    for ckpt in checkpoints:
        spec = work / f"suite-{ckpt.name}.yaml"
        spec.write_text(demo_suite_yaml(paths.base_dir, ckpt))
        run_specs.append(spec)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", COLUMNS="120")
    swayscope = [sys.executable, "-m", "swayscope"]

    walls: dict[str, list[float]] = {"sweep": [], "runs": []}
    work_done: dict[str, dict[str, int]] = {}
    table = ""
    for _ in range(repeats):
        out = work / "sweep-out"
        stdout, elapsed = run(
            [*swayscope, "sweep", str(sweep_spec), "--adapters",
             str(home / CHECKPOINTS_DIRNAME / "step-*"),
             "--out", str(out)], env, work,
        )
        walls["sweep"].append(elapsed)
        summary = json.loads((out / "sweep.json").read_text())
        work_done["sweep"] = totals([summary["backend_stats"]])
        table = stdout
        elapsed_runs = 0.0
        stats = []
        for spec in run_specs:
            result = work / f"{spec.stem}.json"
            _, elapsed = run([*swayscope, "run", str(spec), "--json", str(result)], env, work)
            elapsed_runs += elapsed
            stats.append(json.loads(result.read_text())["backend_stats"])
        walls["runs"].append(elapsed_runs)
        work_done["runs"] = totals(stats)

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; every process OMP_NUM_THREADS=1; "
          f"{repeats} interleaved repeats; training {max(trained.checkpoints)} steps "
          f"({len(checkpoints)} checkpoints): {train_s:.1f} s")
    print(f"{'job':28} {'wall s':>13} {'calls':>6} {'prompts':>8} {'base':>5} {'hit rate':>8}")
    labels = {"sweep": "swayscope sweep (1 process)",
              "runs": f"swayscope run x {len(run_specs)}"}
    for name, values in walls.items():
        w = work_done[name]
        lookups = w["cache_hits"] + w["cache_misses"]
        print(
            f"{labels[name]:28} {statistics.median(values):7.2f} ({min(values):.2f}) "
            f"{w['forward_calls']:6d} {w['forward_passes']:8d} {w['base_forward_passes']:5d} "
            f"{w['cache_hits'] / lookups:8.1%}"
        )
    print("\nthe last sweep's output:\n" + table)
    return walls


if __name__ == "__main__":
    main()
