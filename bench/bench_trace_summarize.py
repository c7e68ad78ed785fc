"""Time and peak memory of ``swayscope trace summarize`` on a large generated trace.

    python bench/bench_trace_summarize.py                    # 256 MB trace, 3 runs
    python bench/bench_trace_summarize.py --size-mb 64 --repeats 1
    python bench/bench_trace_summarize.py --compare-src OTHER/src   # interleaved A/B

Writes a deterministic schema-1 trace (five appended runs, the suite's shape of
probes, views and ops, batched misses, a few malformed lines) to a temporary
directory, then runs the command under ``/usr/bin/time -v`` and reports its
wall time and maximum resident set size. ``--compare-src`` runs the same
command with another source tree on ``PYTHONPATH`` (e.g. an older checkout),
alternating between the two, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model

PROBES = ("delta_kl", "perplexity_shift", "adapter_ablation", "null_adapter", "prompt_collapse")
VIEWS = ("base", "ft", "scaled_0.5", "scaled_1.25", *(f"null_{s}_i1.0_r1.0" for s in range(8)))
OPS = ("next_token_dist", "rolling_logprob", "logprob_of")
SRC = Path(__file__).resolve().parents[1] / "src"


def generate(path: Path, size_mb: int, seed: int = 0) -> int:
    """Write about ``size_mb`` MB of trace lines to ``path``; return the number of lines."""
    rng = random.Random(seed)
    target = size_mb * 1_000_000
    written = lines = 0
    runs = [f"{rng.getrandbits(64):016x}" for _ in range(5)]
    ts = 1_700_000_000.0
    with path.open("w", encoding="ascii") as fh:
        while written < target:
            run_id = runs[min(written * len(runs) // target, len(runs) - 1)]
            probe, view, op = rng.choice(PROBES), rng.choice(VIEWS), rng.choice(OPS)
            batch = rng.randint(1, 16)
            batch_id = f"{rng.getrandbits(64):016x}"
            batch_wall = rng.lognormvariate(2.0, 1.0)
            chunk = []
            for _ in range(batch):
                hit = rng.random() < 0.4
                wall = rng.lognormvariate(-6.0, 0.5) if hit else batch_wall / batch
                ts += wall / 1000.0
                chunk.append(
                    json.dumps(
                        {
                            "schema": 1, "ts": ts, "probe": probe, "view_id": view,
                            "prompt_hash": f"{rng.getrandbits(48):012x}", "top_k": 256,
                            "op": op, "wall_ms": wall, "hit": hit, "run_id": run_id,
                            "start_ts": ts - wall / 1000.0, "view_kind": view.split("_")[0],
                            "batch_id": None if hit else batch_id,
                            "batch_size": None if hit else batch,
                            "batch_wall_ms": None if hit else batch_wall,
                            "n_tokens": None if hit else rng.randint(8, 64),
                            "trace_id": None, "span_id": None, "error": None,
                        },
                        separators=(",", ":"),
                    )
                )
            if rng.random() < 0.0005:
                chunk.append('{"schema":1,"ts":1.0,"probe":"cut off by a cra')
            text = "\n".join(chunk) + "\n"
            fh.write(text)
            written += len(text)
            lines += len(chunk)
    return lines


def measure(trace: Path, src: Path) -> dict[str, float]:
    """One ``trace summarize --format json`` under ``/usr/bin/time -v``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "swayscope", "trace", "summarize",
           str(trace), "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"summarize failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    if rss is None or wall is None:
        raise SystemExit(f"no /usr/bin/time figures in: {proc.stderr[-2000:]}")
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    events = json.loads(proc.stdout)["totals"]["events"]
    return {"rss_mb": int(rss.group(1)) / 1024, "wall_s": seconds, "events": events}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-src", type=Path, help="another source tree to run A/B")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    sources = {"this": SRC}
    if args.compare_src is not None:
        sources["other"] = args.compare_src.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "big.jsonl"
        n_lines = generate(trace, args.size_mb)
        size_mb = trace.stat().st_size / 1e6
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
        for _ in range(args.repeats):
            for name, src in sources.items():
                runs[name].append(measure(trace, src))
    result = {
        "trace_mb": round(size_mb, 1),
        "lines": n_lines,
        "machine": {"cpu": cpu_model(), "python": platform.python_version()},
        "results": {
            name: {
                "best_wall_s": min(r["wall_s"] for r in rs),
                "max_rss_mb": max(r["rss_mb"] for r in rs),
                "events_in_selected_run": rs[0]["events"],
            }
            for name, rs in runs.items()
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"trace: {result['trace_mb']} MB, {n_lines} lines; machine: {result['machine']}")
    for name, r in result["results"].items():
        print(
            f"{name:>6} ({sources[name]}): best wall {r['best_wall_s']:.1f} s, "
            f"max RSS {r['max_rss_mb']:.0f} MB, {r['events_in_selected_run']} events in run"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
