"""One dlm-sway suite three ways: dlm-sway (`sway run`), swayscope (`swayscope run`) and
dlm-sway opted into swayscope's telemetry (`swayscope sway -- run`, JSONL trace on).

Every repeat runs the three commands one after another (interleaved), each a fresh
process on the offline tiny model, every process pinned to one thread
(OMP_NUM_THREADS=1) so the tools get the same CPU. Prints, per command, the medians
of the process wall time and of the suite's own wall time (from its result JSON), the
forward work (model calls and prompts computed), the cache hit rate and the verdicts.
dlm-sway runs from its own venv:

    python bench/bench_dlm_sway.py --sway .venv-dlm-sway/bin/sway [--repeats 5]
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machine import cpu_model

from swayscope.backends.tiny import TinyModelPaths, build_tiny
from swayscope.probes.defaults import DEFAULT_PROMPTS

SUITE = """\
version: 1
models:
  base: {{kind: hf, base: {base}, dtype: fp32, device: cpu}}
  ft: {{kind: hf, base: {base}, adapter: {adapter}, dtype: fp32, device: cpu}}
defaults:
  seed: 0
  top_k: 256
suite:
  - {{name: calibration, kind: null_adapter, runs: 3, cache: false}}
  - {{name: dk_all, kind: delta_kl, prompts: {prompts}}}
  - {{name: dk_code, kind: delta_kl, prompts: {code}}}
  - {{name: ablation, kind: adapter_ablation, prompts: {half}}}
  - {{name: collapse, kind: prompt_collapse, prompts: {half}, context_lengths: [0, 32, 128]}}
  - {{name: prose_ppl, kind: external_perplexity, max_chunks: 8}}
"""


@dataclass
class Run:
    process_s: float
    suite_s: float
    forward_calls: int
    forward_passes: int
    hit_rate: float
    verdicts: str


def _sway_result(data: dict[str, Any], process_s: float) -> Run:
    stats = data["backend_stats"]
    return Run(
        process_s=process_s,
        suite_s=float(data["wall_seconds"]),
        # dlm-sway 0.1.0 computes one prompt per model call; under the shim, calls are counted.
        forward_calls=int(stats.get("forward_calls", stats["forward_passes"])),
        forward_passes=int(stats["forward_passes"]),
        hit_rate=float(stats["hit_rate"]),
        verdicts=" ".join(p["verdict"] for p in data["probes"]),
    )


def _swayscope_result(data: dict[str, Any], process_s: float) -> Run:
    stats = data["backend_stats"]
    return Run(
        process_s=process_s,
        suite_s=float(data["wall_s"]),
        forward_calls=int(stats["forward_calls"]),
        forward_passes=int(stats["forward_passes"]),
        hit_rate=float(stats["hit_rate"]),
        verdicts=" ".join(p["verdict"] for p in data["probes"]),
    )


def run(cmd: list[str], out: Path, env: dict[str, str], cwd: Path) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text()), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sway", type=Path, required=True, help="dlm-sway's sway script")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--home", type=Path, default=None, help="folder for the tiny model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dlm-sway-") as tmp:
        # Absolute: the commands run in the scratch folder (a relative --sway names a file
        # relative to where the bench was started).
        measure(Path(tmp), args.sway.absolute(), args.home, args.repeats)


def write_suite(work: Path, paths: TinyModelPaths) -> Path:
    """The suite on the tiny model, in ``work``."""
    spec = work / "sway.yaml"
    spec.write_text(SUITE.format(
        base=json.dumps(str(paths.base_dir)), adapter=json.dumps(str(paths.adapter_dir)),
        prompts=json.dumps(list(DEFAULT_PROMPTS)), code=json.dumps([DEFAULT_PROMPTS[3],
                                                                     DEFAULT_PROMPTS[11]]),
        half=json.dumps(list(DEFAULT_PROMPTS[:8])),
    ))
    return spec


Reader = Callable[[dict[str, Any], float], Run]


def commands(spec: Path, sway: Path, work: Path) -> dict[str, tuple[list[str], Reader]]:
    """The three commands (each takes ``--json OUT`` after it) and how to read their JSON."""
    swayscope = [sys.executable, "-m", "swayscope"]
    return {
        "sway run": ([str(sway), "run", str(spec)], _sway_result),
        "swayscope run": ([*swayscope, "run", str(spec)], _swayscope_result),
        "swayscope sway -- run": (
            [*swayscope, "sway", "--sway", str(sway), "--trace", str(work / "t.jsonl"),
             "--", "run", str(spec)],
            _sway_result,
        ),
    }


def measure(work: Path, sway: Path, home: Path | None, repeats: int) -> dict[str, list[Run]]:
    """Run the three commands ``repeats`` times, interleaved, in ``work`` (the tiny model
    under ``home``, else in ``work`` too); print the table and return the runs."""
    spec = write_suite(work, build_tiny((home or work) / "tiny-model", seed=0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SWAYSCOPE_SWAY"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", SWAYSCOPE_HOME=str(work / "home"))
    result = work / "result.json"
    commands_run = commands(spec, sway, work)
    runs: dict[str, list[Run]] = {name: [] for name in commands_run}
    for _ in range(repeats):
        for name, (cmd, read) in commands_run.items():
            data, elapsed = run([*cmd, "--json", str(result)], result, env, work)
            runs[name].append(read(data, elapsed))

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; every process OMP_NUM_THREADS=1; "
          f"{repeats} interleaved repeats; median (best) of the times, median of the rest")
    print(f"{'command':24} {'process s':>13} {'suite s':>11} {'calls':>6} {'prompts':>8} "
          f"{'hit rate':>8}  verdicts")

    def times(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f})"

    for name, rs in runs.items():
        print(
            f"{name:24} {times([r.process_s for r in rs]):>13} "
            f"{times([r.suite_s for r in rs]):>11} "
            f"{statistics.median(r.forward_calls for r in rs):6.0f} "
            f"{statistics.median(r.forward_passes for r in rs):8.0f} "
            f"{statistics.median(r.hit_rate for r in rs):8.1%}  {rs[-1].verdicts}"
        )
    return runs


if __name__ == "__main__":
    main()
