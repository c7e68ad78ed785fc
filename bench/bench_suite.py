"""Demo suite with the cache and batching on vs off: forward calls, hit rate, wall time.

Runs the built-in demo suite (all five probes) on the offline tiny model four
ways and prints each configuration's numbers and its ratio to the default
(cache on, batching on). "Cache off" is a cache whose byte budget no value fits
(every entry is dropped on the way in); "batching off" is max_batch_size=1.

    python bench/bench_suite.py [--repeats 3] [--home DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from swayscope.backends.tiny import build_tiny
from swayscope.instrumentation import BackendInstrumentation
from swayscope.suite.demo import demo_suite_yaml
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import load_suite_text

#: The four configurations: (name, cache on, batching on).
CONFIGS = (
    ("cache on,  batching on ", True, True),
    ("cache off, batching on ", False, True),
    ("cache on,  batching off", True, False),
    ("cache off, batching off", False, False),
)


@dataclass
class Outcome:
    forward_calls: int
    forward_passes: int
    hit_rate: float
    wall_s: float
    verdicts: str


def run_once(base: Path, adapter: Path, *, cache: bool, batching: bool) -> Outcome:
    text = demo_suite_yaml(base, adapter)
    if not batching:
        text = text.replace("max_batch_size: 16", "max_batch_size: 1")
    loaded = load_suite_text(text, "demo")
    inst = BackendInstrumentation(
        cache_maxsize=loaded.spec.defaults.cache_size,
        cache_max_bytes=None if cache else 1,
    )
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
    t0 = time.perf_counter()
    result = run_suite(loaded, backend, live_progress=False)
    wall = time.perf_counter() - t0
    inst.close()
    return Outcome(
        forward_calls=inst.stats.forward_calls,
        forward_passes=inst.stats.forward_passes,
        hit_rate=inst.stats.hit_rate,
        wall_s=wall,
        verdicts=" ".join(p.verdict for p in result.probes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--home", type=Path, default=None, help="tiny-model folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swayscope-bench-") as tmp:
        measure(args.home or Path(tmp), args.repeats)


def measure(home: Path, repeats: int) -> None:
    """Run the four configurations ``repeats`` times each on the tiny model (built under
    ``home``) and print the table."""
    paths = build_tiny(home / "tiny", seed=0)
    rows: list[tuple[str, Outcome]] = []
    for name, cache, batching in CONFIGS:
        runs = [
            run_once(paths.base_dir, paths.adapter_dir, cache=cache, batching=batching)
            for _ in range(repeats)
        ]
        best = min(runs, key=lambda r: r.wall_s)
        best.wall_s = statistics.median(r.wall_s for r in runs)
        rows.append((name, best))
    base = rows[0][1]
    print(f"demo suite on the tiny model, median wall of {repeats} runs")
    print(f"{'configuration':24} {'fwd calls':>9} {'prompts':>8} {'hit rate':>8} "
          f"{'wall s':>7} {'calls x':>8} {'wall x':>7}  verdicts")
    for name, r in rows:
        print(
            f"{name:24} {r.forward_calls:9d} {r.forward_passes:8d} {r.hit_rate:8.3f} "
            f"{r.wall_s:7.2f} {r.forward_calls / base.forward_calls:8.2f} "
            f"{r.wall_s / base.wall_s:7.2f}  {r.verdicts}"
        )


if __name__ == "__main__":
    main()
