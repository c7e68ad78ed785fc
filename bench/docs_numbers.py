"""Every number the README and docs/*.md quote from a run of the current code, produced by
running it: the demo's sample report, the sweep's tables, the suite bench's call counts,
the scrape's series, the dashboard's rows, the dlm-sway comparison, the SmolLM2 demo.

The docs mark each such block or phrase:

    <!-- docs-numbers: NAME -->…<!-- /docs-numbers -->

and NAME is a section below: a function that runs what the numbers come from and returns
the text in between. Deterministic values (scores, verdicts, counts, tokens) must match
exactly; values that differ from run to run (wall times, run ids, ports) are ``Varying``:
any value matches them, and ``--write`` writes this run's (or, for the benches' timings
this script does not measure, keeps the docs' own). Whitespace that aligns columns may
differ.

    python bench/docs_numbers.py                  # run the cheap sections, print them
    python bench/docs_numbers.py --check          # ... and compare with the docs (exit 1)
    python bench/docs_numbers.py --write          # ... and write them into the docs
    python bench/docs_numbers.py --smollm2 --write   # also the SmolLM2 demo (~4 min here)
    python bench/docs_numbers.py --timings --write   # also re-measure the benches' times
    python bench/docs_numbers.py --only demo-report --check

Every run pins torch to one thread (``OMP_NUM_THREADS=1``, ``--threads 1``), so the numbers
do not depend on the machine's core count. dlm-sway's sections need its venv
(``.venv-dlm-sway``, or ``$SWAYSCOPE_DLM_SWAY_VENV``); without it they are skipped.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
MARK = re.compile(r"<!-- docs-numbers: ([\w-]+) -->(.*?)<!-- /docs-numbers -->", re.S)
#: What the docs show instead of this machine's home folder for swayscope.
HOME_SHOWN = "~/.cache/swayscope"
SWAY_VENV_ENV = "SWAYSCOPE_DLM_SWAY_VENV"
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class Varying:
    """A value that differs from run to run (a time, an id, a port: no spaces, no ``|``);
    None: not measured by this script (a bench's timing), the docs' own value is kept."""

    text: str | None = None


Piece = str | Varying


def pieces(text: str, *patterns: str) -> list[Piece]:
    """``text`` with every match of ``patterns`` (regexes; their group 1 when they have one)
    made :class:`Varying`."""
    if not patterns:
        return [text]
    joined = re.compile("|".join(f"(?:{p})" for p in patterns))
    out: list[Piece] = []
    at = 0
    for match in joined.finditer(text):
        groups = [i for i in range(1, (match.re.groups or 0) + 1) if match.group(i) is not None]
        start, end = (match.span(groups[0]) if groups else match.span())
        out.extend([text[at:start], Varying(text[start:end])])
        at = end
    out.append(text[at:])
    return [p for p in out if p != ""]


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n"))


ANY_VALUE = r"[^\s|]+"


def pattern(block: Sequence[Piece], *, any_number: bool = False) -> re.Pattern[str]:
    """A regex that matches the block whatever its varying values (one group each) and
    column padding; ``any_number``: whatever its other numbers too (the block's shape)."""
    parts = []
    for piece in block:
        if isinstance(piece, Varying):
            parts.append(f"({ANY_VALUE})")
            continue
        # Spaces at a line's end are not compared (the docs' lines are stripped); any other
        # run of spaces matches any run of whitespace (re-padded columns, wrapped prose).
        for i, chunk in enumerate(re.split(r"([ \t]+)", re.sub(r"[ \t]+\n", "\n", piece))):
            if i % 2:
                # One \s+ per run of spaces, even across pieces: two side by side split a
                # run n ways, and a block with many columns then backtracks for hours.
                if not parts or parts[-1] != r"\s+":
                    parts.append(r"\s+")
            elif not chunk:
                continue
            elif any_number:
                parts.append("".join(
                    ANY_VALUE if re.search(r"\d", word) else re.escape(word)
                    for word in re.split(r"(\s)", chunk)
                ))
            else:
                parts.append(re.escape(chunk))
    return re.compile("".join(parts))


def render(block: Sequence[Piece], kept: Sequence[str] = ()) -> str:
    """The block's text; a Varying without a value takes the next of ``kept``."""
    rest = iter(kept)
    return "".join(
        p if isinstance(p, str) else p.text if p.text is not None else next(rest, "?")
        for p in block
    )


# -- the runs the numbers come from ----------------------------------------------------------


def subprocess_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SWAYSCOPE_SWAY"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", SWAYSCOPE_HOME=str(home), COLUMNS="200",
               PYTHONPATH=os.pathsep.join(filter(None, (str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH")))))
    return env


def run_command(cmd: list[str], home: Path, cwd: Path) -> tuple[str, float]:
    """Run ``cmd``: its stdout and wall seconds; exits on an error (exit code above 1)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(home),
                          cwd=cwd, check=False)
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - t0


def swayscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "swayscope", *args]


def fmt(value: float | None, digits: int = 4) -> str:
    """A score as the reports print it."""
    return "-" if value is None else f"{value:.{digits}g}"


def sway_venv() -> Path:
    return Path(os.environ.get(SWAY_VENV_ENV) or REPO / ".venv-dlm-sway")


@dataclass
class SweepRuns:
    """The demo suite on the tiny adapter's checkpoints: one sweep, and one run each."""

    sweep: Any
    runs: list[dict[str, Any]]
    train_s: float


def median_best(values: Sequence[float]) -> tuple[str, str]:
    return f"{statistics.median(values):.2f}", f"{min(values):.2f}"


class Runs:
    """Each run once, when a section first needs it, in one scratch folder."""

    def __init__(self, work: Path, *, timings: bool = False) -> None:
        self.work = work
        self.timings = timings
        """Measure the benches' wall times too (else the docs keep theirs)."""

    def timed(self, text: str) -> Varying:
        """A bench's wall time: measured with ``--timings``, else the docs' kept."""
        return Varying(text if self.timings else None)

    @functools.cached_property
    def tiny(self) -> Any:
        from swayscope.backends.tiny import build_tiny

        return build_tiny(self.work / "tiny-model", seed=0)

    @functools.cached_property
    def demo(self) -> tuple[dict[str, Any], str]:
        """``swayscope demo --threads 1``: the result JSON and what it printed."""
        home = self.work / "demo-home"
        out, _ = run_command(swayscope("demo", "--threads", "1"), home, self.work)
        result = json.loads((home / "demo" / "result.json").read_text())
        return result, out.replace(str(home), HOME_SHOWN)

    @functools.cached_property
    def sweep(self) -> SweepRuns:
        """bench_sweep's checkpoints; the sweep in process, and one run per checkpoint."""
        from bench_sweep import CHECKPOINTS

        from swayscope.backends.tiny import train_tiny_checkpoints
        from swayscope.instrumentation import BackendInstrumentation
        from swayscope.suite.demo import demo_suite_yaml
        from swayscope.suite.runner import build_backend, run_suite
        from swayscope.suite.spec import load_suite_text
        from swayscope.suite.sweep.adapters import order_adapters
        from swayscope.suite.sweep.runner import InProcessRunner, run_sweep

        trained = train_tiny_checkpoints(self.work / "tiny-model", CHECKPOINTS, seed=0)
        checkpoints = [trained.checkpoints[s] for s in sorted(trained.checkpoints)]

        def load(adapter: Path) -> Any:
            loaded = load_suite_text(demo_suite_yaml(self.tiny.base_dir, adapter), "demo")
            loaded.spec = loaded.spec.model_copy(update={
                "defaults": loaded.spec.defaults.model_copy(update={"threads": 1})})
            return loaded

        loaded = load(checkpoints[0])
        inst = BackendInstrumentation(cache_maxsize=loaded.spec.defaults.cache_size)
        runner = InProcessRunner(loaded, inst, live_progress=False)
        adapters, order = order_adapters(checkpoints)
        sweep = run_sweep(loaded, adapters, runner, inst, order=order)
        if runner.backend is not None:
            runner.backend.close()
        runs = []
        for adapter in checkpoints:
            one = load(adapter)
            inst = BackendInstrumentation(cache_maxsize=one.spec.defaults.cache_size)
            backend = build_backend(one.spec.models, one.spec.defaults, inst)
            runs.append(run_suite(one, backend, live_progress=False).backend_stats)
            backend.close()
        return SweepRuns(sweep, runs, trained.seconds)

    @functools.cached_property
    def sweep_bench(self) -> dict[str, list[float]]:
        """bench_sweep's wall times: the sweep and the five runs, each a fresh process, 3
        interleaved repeats."""
        from bench_sweep import measure

        folder = self.work / "sweep-bench"
        folder.mkdir()
        return measure(folder, self.work, repeats=3)

    @functools.cached_property
    def dlm_sway_bench(self) -> dict[str, list[Any]]:
        """bench_dlm_sway's process and suite times: the three commands, 3 repeats."""
        from bench_dlm_sway import measure

        folder = self.work / "dlm-sway-bench"
        folder.mkdir()
        return measure(folder, sway_venv() / "bin" / "sway", self.work, repeats=3)

    @functools.cached_property
    def suite_bench(self) -> list[tuple[str, Any]]:
        """bench_suite's four configurations (with timings: 3 runs each, median wall)."""
        from bench_suite import CONFIGS, run_once

        rows = []
        for name, cache, batching in CONFIGS:
            runs = [run_once(self.tiny.base_dir, self.tiny.adapter_dir, cache=cache,
                             batching=batching) for _ in range(3 if self.timings else 1)]
            best = runs[0]
            best.wall_s = statistics.median(r.wall_s for r in runs)
            rows.append((name, best))
        return rows

    @functools.cached_property
    def scrape(self) -> dict[int, int]:
        """bench_scrape's suites of 5 and 500 probes: series in one scrape."""
        from bench_scrape import scrape_once

        return {n: scrape_once(n) for n in (5, 500)}

    @functools.cached_property
    def scrape_families(self) -> dict[str, tuple[tuple[str, ...], int]]:
        """bench_scrape's 5-probe run: each metric family's labels and series."""
        from bench_scrape import scrape_families

        return scrape_families(5)

    @functools.cached_property
    def dlm_sway(self) -> dict[str, Any]:
        """bench_dlm_sway's suite once through each command, and delta_kl at top_k 64."""
        from bench_dlm_sway import commands, write_suite

        venv = sway_venv()
        home = self.work / "sway-home"
        spec = write_suite(self.work, self.tiny)
        out: dict[str, Any] = {}
        for name, (cmd, read) in commands(spec, venv / "bin" / "sway", self.work).items():
            result = self.work / "result.json"
            run_command([*cmd, "--json", str(result)], home, self.work)
            out[name] = read(json.loads(result.read_text()), 0.0)
        small = spec.with_name("topk64.yaml")
        small.write_text(TOPK64_SUITE.format(base=json.dumps(str(self.tiny.base_dir)),
                                             adapter=json.dumps(str(self.tiny.adapter_dir))))
        # The mean JS: dlm-sway's ``raw`` (its ``score`` is a [0, 1] normalisation).
        for name, cmd, key in (("sway", [str(venv / "bin" / "sway"), "run"], "raw"),
                               ("swayscope", swayscope("run"), "score")):
            result = self.work / f"topk64-{name}.json"
            run_command([*cmd, str(small), "--json", str(result)], home, self.work)
            out[f"topk64 {name}"] = json.loads(result.read_text())["probes"][0][key]
        return out

    @functools.cached_property
    def smollm2(self) -> dict[str, Any]:
        """``swayscope demo --model smollm2 --threads 1`` in a fresh home (it builds, trains
        and sweeps), then again (everything cached)."""
        home = self.work / "smollm2-home"
        cmd = swayscope("demo", "--model", "smollm2", "--threads", "1")
        loads = [os.getloadavg()[0]]
        first_out, first_s = run_command(cmd, home, self.work)
        # The first run's outputs: the second reads everything from the disk cache, so its
        # sweep computes nothing (the scores are the same).
        out_dir = home / "demo-smollm2"
        results = {role: json.loads((out_dir / f"result.{role}.json").read_text())
                   for role in ("trained", "noop", "random")}
        sweep = json.loads((out_dir / "sweep.json").read_text())
        second_out, second_s = run_command(cmd, home, self.work)
        loads.append(os.getloadavg()[0])
        return {"results": results, "sweep": sweep, "first_s": first_s, "second_s": second_s,
                "first_out": first_out, "second_out": second_out, "loads": loads}


#: One delta_kl on four prompts at top_k 64, in dlm-sway's format (both tools run it).
TOPK64_SUITE = """\
version: 1
models:
  base: {{kind: hf, base: {base}, dtype: fp32, device: cpu}}
  ft: {{kind: hf, base: {base}, adapter: {adapter}, dtype: fp32, device: cpu}}
defaults: {{seed: 0, top_k: 64}}
suite:
  - name: dk_prose
    kind: delta_kl
    prompts: ["The capital of France is", "Once upon a time", "The quick brown fox",
              "Water boils at"]
"""


# -- the sections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    name: str
    make: Callable[[Runs], list[Piece]]
    cheap: bool
    needs: Callable[[], str | None]
    """Why this section cannot run here (None: it can)."""
    timing: bool = False
    """Says where the benches' times were measured: written with ``--timings`` only, never
    checked."""


SECTIONS: dict[str, Section] = {}


def _always() -> str | None:
    return None


def _needs_dlm_sway() -> str | None:
    sway = sway_venv() / "bin" / "sway"
    return None if sway.is_file() else f"dlm-sway's venv is not at {sway_venv()} (no bin/sway)"


def section(
    name: str, *, cheap: bool = True, needs: Callable[[], str | None] = _always,
    timing: bool = False,
) -> Callable[[Callable[[Runs], list[Piece]]], Callable[[Runs], list[Piece]]]:
    def register(make: Callable[[Runs], list[Piece]]) -> Callable[[Runs], list[Piece]]:
        SECTIONS[name] = Section(name, make, cheap, needs, timing)
        return make

    return register


def columns(rows: Sequence[Sequence[Piece]], right: Sequence[int] = ()) -> list[list[Piece]]:
    """Rows of cells as space-aligned lines (cells ``right`` right-aligned)."""
    widths = [max(len(render([row[i]])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        line: list[Piece] = [" "]
        for i, cell in enumerate(row):
            last = i == len(row) - 1
            pad = "" if last and i not in right else " " * (widths[i] - len(render([cell])))
            line.extend([pad, cell] if i in right else [cell, pad])
            line.append("" if last else "  ")
        lines.append(line)
    return lines


def abridged(message: str, limit: int = 100) -> str:
    if len(message) <= limit:
        return message
    return message[: message.rfind(" ", 0, limit - 2)] + " …"


@section("disk-entry-kib")
def disk_entry_kib(runs: Runs) -> list[Piece]:
    """README, scaling.md: the disk cache's bytes per entry after the tiny demo (a fresh
    home: the file holds the demo's entries only)."""
    disk = runs.demo[0]["disk_cache"]
    return [f"{disk['bytes'] / disk['entries'] / 1024:.1f}"]


@section("demo-report")
def demo_report(runs: Runs) -> list[Piece]:
    """The tiny demo's report as it prints (table abridged, as in the README)."""
    result, printed = runs.demo
    lines = printed.splitlines()
    headline = next(ln for ln in lines if ln.startswith("suite 'demo' run "))
    footer_at = next(i for i, ln in enumerate(lines) if ln.startswith("cache: "))
    rows: list[list[Piece]] = [["probe", "verdict", "score", "z", "time", "evidence"]]
    for p in result["probes"]:
        rows.append([p["name"], p["verdict"], fmt(p["score"]), fmt(p["z_score"], 3),
                     Varying(f"{p['duration_s']:.2f}s"), abridged(p["message"])])
    out: list[Piece] = ["\n```\n", *pieces(headline.rstrip(), r"run ([0-9a-f]{16})"), "\n"]
    for line in columns(rows, right=(2, 3, 4)):
        out.extend([*line, "\n"])
    for line in lines[footer_at:]:
        out.extend([*pieces(line.rstrip(), r"wall time: ([\d.]+) s", r"127\.0\.0\.1:(\d+)"),
                    "\n"])
    return [*out, "```\n"]


def _sweep_table(runs: Runs, markdown: bool) -> list[Piece]:
    sweep = runs.sweep.sweep
    totals = {k: sum(int(s[k]) for s in runs.sweep.runs) for k in
              ("forward_calls", "forward_passes", "base_forward_passes", "cache_hits",
               "cache_misses")}
    rows = []
    for key, job, stats in (
        ("sweep", "`swayscope sweep` (one process)", sweep.backend_stats),
        ("runs", f"`swayscope run` {TIMES} {len(runs.sweep.runs)}", totals),
    ):
        lookups = int(stats["cache_hits"]) + int(stats["cache_misses"])
        median, best = median_best(runs.sweep_bench[key]) if runs.timings else (None, None)
        rows.append([f"| {job} | ", Varying(median), " (", Varying(best), ") | ",
                     f"{int(stats['forward_calls'])} | {int(stats['forward_passes'])} | "
                     f"{int(stats['base_forward_passes'])} | "
                     f"{100 * int(stats['cache_hits']) / lookups:.1f} % |\n"])
    head = ("| job | wall s, median (best) | model calls | prompts computed | base-view prompts "
            "| cache hit rate |\n|---|---:|---:|---:|---:|---:|\n" if markdown else
            "| job | wall s | model calls | prompts computed | of which base view | cache hit "
            "rate |\n|---|---|---|---|---|---|\n")
    return ["\n", head, *(p for row in rows for p in row)]


@section("sweep-table")
def sweep_table(runs: Runs) -> list[Piece]:
    """README: the sweep against five runs (counts; the times are bench_sweep's)."""
    return _sweep_table(runs, markdown=False)


@section("sweep-bench-table")
def sweep_bench_table(runs: Runs) -> list[Piece]:
    """docs/benchmarks.md: the same, in its table's layout."""
    return _sweep_table(runs, markdown=True)


@section("sweep-summary")
def sweep_summary(runs: Runs) -> list[Piece]:
    """README: the sweep's terminal summary, abridged (box lines and z-scores left out)."""
    from swayscope.suite.sweep.plots import sparkline
    from swayscope.suite.sweep.report import cell, footer_lines, headline

    sweep = runs.sweep.sweep
    probes = sweep.probe_names()
    curves = {name: sweep.points(name) for name in probes}
    rows: list[list[Piece]] = [["adapter", *probes, "hit", "time"]]
    for i, outcome in enumerate(sweep.adapters):
        stats = outcome.stats
        lookups = int(stats["cache_hits"]) + int(stats["cache_misses"])
        rows.append([
            outcome.adapter.label,
            *(re.sub(r" \(z [^)]*\)", "", cell(curves[name][i])) for name in probes),
            f"{100 * int(stats['cache_hits']) / lookups:.0f} %",
            Varying(f"{outcome.result.wall_s:.1f}s"),
        ])
    out: list[Piece] = ["\n```\n", *pieces(headline(sweep), r"\(([0-9a-f]{16})\)"),
                        "\nverdict score per adapter\n"]
    for line in columns(rows, right=(len(probes) + 1, len(probes) + 2)):
        out.extend([*line, "\n"])
    first, last = sweep.adapters[0].adapter, sweep.adapters[-1].adapter
    out.append(f"score per checkpoint, step {first.step} → {last.step}\n")
    width = max(len(n) for n in probes)
    for name in probes:
        scores = [p.score for p in curves[name]]
        known = [s for s in scores if s is not None]
        out.append(f"  {name:<{width}}  {sparkline(scores)}  {fmt(known[0])} → "
                   f"{fmt(known[-1])} (min {fmt(min(known))}, max {fmt(max(known))})\n")
    for line in footer_lines(sweep):
        out.extend([*pieces(line, r"wall time: ([\d.]+) s"), "\n"])
    return [*out, "```\n"]


@section("sweep-base-prompts")
def sweep_base_prompts(runs: Runs) -> list[Piece]:
    """The base view's prompts the sweep computes once (the runs, once per adapter)."""
    return [str(int(runs.sweep.sweep.backend_stats["base_forward_passes"]))]


@section("timings-machine", timing=True)
def timings_machine(runs: Runs) -> list[Piece]:
    """Where ``--timings`` measured the benches' times: the CPU, its count, the load."""
    from machine import cpu_model

    return [f"{cpu_model()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[2]:.1f} over the last quarter hour of the runs"]


@section("suite-bench-table")
def suite_bench_table(runs: Runs) -> list[Piece]:
    """docs/benchmarks.md: the demo suite with the cache and batching on and off."""
    rows = runs.suite_bench
    base = rows[0][1]
    out: list[Piece] = [
        "\n| configuration           | forward calls | prompts computed | hit rate | wall s "
        f"| calls {TIMES} | wall {TIMES} |\n|-------------------------|--------------:|"
        "-----------------:|---------:|-------:|--------:|-------:|\n"
    ]
    for name, r in rows:
        out.extend([
            f"| {' '.join(name.split())} | {r.forward_calls} | {r.forward_passes} | "
            f"{r.hit_rate:.3f} | ", runs.timed(f"{r.wall_s:.2f}"), " | ",
            f"{r.forward_calls / base.forward_calls:.2f} | ",
            runs.timed(f"{r.wall_s / base.wall_s:.2f}"), " |\n",
        ])
    return out


@section("suite-bench-counts")
def suite_bench_counts(runs: Runs) -> list[Piece]:
    """docs/benchmarks.md: what the table says, in words."""
    rows = [r for _, r in runs.suite_bench]
    on, off = rows[0], rows[-1]
    verdicts = {r.verdicts for r in rows}
    same = (f"All four configurations give the same verdicts ({_counted(rows[0].verdicts)})"
            if len(verdicts) == 1 else "The configurations' verdicts differ: "
            + "; ".join(r.verdicts for r in rows))
    return [
        f"{same}. The cache saves {off.forward_passes - on.forward_passes} of "
        f"{off.forward_passes} prompt computations (cross-probe sharing: λ = 0 and λ = 1 "
        "reuse delta_kl's base and ft distributions, the null adapters' base batches are "
        f"reused later); batching packs the {on.forward_passes} computed prompts into "
        f"{on.forward_calls} model calls. Together: "
        f"{off.forward_calls / on.forward_calls:.1f}{TIMES} fewer model calls and ",
        runs.timed(f"{off.wall_s / on.wall_s:.1f}{TIMES}"), " less wall time",
    ]


def _counted(verdicts: str) -> str:
    counts: dict[str, int] = {}
    for v in verdicts.split():
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


@section("sweep-bench-base")
def sweep_bench_base(runs: Runs) -> list[Piece]:
    """docs/benchmarks.md: the base view's prompts, computed once by the sweep."""
    sweep = runs.sweep.sweep
    per_adapter = [int(o.stats.get("base_forward_passes", 0)) for o in sweep.adapters]
    runs_base = sum(int(s["base_forward_passes"]) for s in runs.sweep.runs)

    def hit(stats: list[dict[str, Any]]) -> float:
        hits = sum(int(s["cache_hits"]) for s in stats)
        return 100 * hits / (hits + sum(int(s["cache_misses"]) for s in stats))

    gain = hit([sweep.backend_stats]) - hit(runs.sweep.runs)
    return [
        f"The base view's {per_adapter[0]} prompts are computed once for the "
        f"{len(per_adapter)} adapters (stats: `base_forward_passes` "
        f"{', '.join(map(str, per_adapter))}), so the sweep computes "
        f"{runs_base - sum(per_adapter)} prompts fewer and its hit rate is {gain:.0f} points "
        "higher"
    ]


@section("scrape-series")
def scrape_series(runs: Runs) -> list[Piece]:
    """The series of one scrape, for 5 and 500 probes (none with a score)."""
    return [f"{runs.scrape[5]} for 5 probes without a score, {runs.scrape[500]} for 500"]


@section("scrape-table")
def scrape_table(runs: Runs) -> list[Piece]:
    """watching.md: the series of one scrape by metric family (bench_scrape's 5-probe run,
    OpenMetrics as Prometheus asks for it); the families that grow with the suite last."""
    grows = {"swayscope_probe_duration_seconds": "*P*", "swayscope_probe_score": "*S*",
             "swayscope_sweep_adapter_progress_ratio": "*A*"}
    rows = ["\n| metric (labels) | series |\n|---|---|\n"]
    for name, (labels, count) in sorted(runs.scrape_families.items()):
        if name in grows or not count:
            continue
        shown = f"`{name}` ({', '.join(labels)})" if labels else f"`{name}`"
        rows.append(f"| {shown} | {count} |\n")
    rows.append("| `swayscope_sweep_adapter_progress_ratio` (adapter): a sweep's adapters | *A* |\n"
                "| `swayscope_probe_duration_seconds` (probe, status) | *P* |\n"
                "| `swayscope_probe_score` (probe, adapter): probes with a score, per adapter "
                "| *S* |\n"
                "| `swayscope_worker_*` (worker): on a pool, each worker's | *W* |\n")
    return rows


@section("scrape-constant")
def scrape_constant(runs: Runs) -> list[Piece]:
    """The series of one scrape that do not grow with the suite (the 5 probes' taken off)."""
    return [str(runs.scrape[5] - 5)]


@section("dashboard-rows")
def dashboard_rows(runs: Runs) -> list[Piece]:
    """How many rows the Grafana dashboard has."""
    board = json.loads((REPO / "dashboards" / "grafana" / "swayscope.json").read_text())
    count = sum(1 for p in board["panels"] if p.get("type") == "row")
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return [f"{words[count] if count < len(words) else count} rows"]


def _dlm_sway_row(runs: Runs, name: str) -> list[Piece]:
    run = runs.dlm_sway[name]
    times: list[str | None] = [None] * 4
    if runs.timings:
        timed = runs.dlm_sway_bench[name]
        times = [*median_best([r.process_s for r in timed]),
                 *median_best([r.suite_s for r in timed])]
    return [Varying(times[0]), " (", Varying(times[1]), ") | ", Varying(times[2]), " (",
            Varying(times[3]), ") | ",
            f"{run.forward_calls} | {run.forward_passes} | {run.hit_rate:.1%} | "
            .replace("%", " %"), f"{run.verdicts} |\n"]


@section("dlm-sway-table", needs=_needs_dlm_sway)
def dlm_sway_table(runs: Runs) -> list[Piece]:
    """README: one dlm-sway suite three ways (counts and verdicts; times: bench_dlm_sway)."""
    labels = {"sway run": "`sway run` (dlm-sway 0.1.0)", "swayscope run": "`swayscope run`",
              "swayscope sway -- run": "`swayscope sway -- run` (JSONL on)"}
    out: list[Piece] = [
        "\n| command | process s | suite s | model calls | prompts computed | cache hit rate "
        "| verdicts |\n|---|---|---|---|---|---|---|\n"
    ]
    for name, label in labels.items():
        out.extend([f"| {label} | ", *_dlm_sway_row(runs, name)])
    return out


@section("dlm-sway-share", needs=_needs_dlm_sway)
def dlm_sway_share(runs: Runs) -> list[Piece]:
    """README: swayscope's suite time as a share of dlm-sway's (median, best)."""
    shares: list[str | None] = [None, None]
    if runs.timings:
        ours = [r.suite_s for r in runs.dlm_sway_bench["swayscope run"]]
        theirs = [r.suite_s for r in runs.dlm_sway_bench["sway run"]]
        shares = [f"{100 * statistics.median(ours) / statistics.median(theirs):.0f}",
                  f"{100 * min(ours) / min(theirs):.0f}"]
    return ["swayscope runs the suite in ", Varying(shares[0]), " % of dlm-sway's time "
            "(median; ", Varying(shares[1]), " % best)"]


@section("dlm-sway-calls", needs=_needs_dlm_sway)
def dlm_sway_calls(runs: Runs) -> list[Piece]:
    """README: the model calls of that table, in words."""
    ours, theirs = runs.dlm_sway["swayscope run"], runs.dlm_sway["sway run"]
    return [f"{ours.forward_calls} batched calls instead of {theirs.forward_calls} single ones"]


@section("dlm-sway-topk64", needs=_needs_dlm_sway)
def dlm_sway_topk64(runs: Runs) -> list[Piece]:
    """README: the same four prompts' mean JS at top_k 64 in each tool."""
    data = runs.dlm_sway
    return [f"{data['topk64 sway']:.3f} nats in dlm-sway and {data['topk64 swayscope']:.3f} "
            "in swayscope"]


#: The README's example of a dlm-sway suite swayscope cannot run as is (``{kind}``: the
#: third entry's kind, ``{band}``: the fourth entry's extra field).
REFUSED_SUITE = """\
version: 1
models:
  base: {{kind: hf, base: ./base}}
  ft: {{kind: hf, base: ./base, adapter: ./lora}}
suite:
  - name: calibration
    kind: null_adapter
  - name: dk
    kind: delta_kl
    prompts: ["The key insight is", "An important rule"]
  - name: topics
    kind: {kind}
  - name: shape
    kind: adapter_ablation
    prompts: ["Tell me more about"]
{band}  - name: leaks
    kind: leakage
"""


def refused(runs: Runs, kind: str, band: str) -> list[Piece]:
    """What ``swayscope run sway.yaml`` says of REFUSED_SUITE (run where it is: the paths in
    the messages are as a user types them)."""
    folder = runs.work / f"refused-{kind}"
    folder.mkdir(exist_ok=True)
    (folder / "sway.yaml").write_text(REFUSED_SUITE.format(kind=kind, band=band))
    proc = subprocess.run(swayscope("run", "sway.yaml"), capture_output=True,
                          text=True, env=subprocess_env(folder), cwd=folder, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    return ["\n```\n", proc.stderr, "```\n"]


@section("dlm-sway-refused")
def dlm_sway_refused(runs: Runs) -> list[Piece]:
    """README: what stops a dlm-sway suite (a kind dlm-sway lacks, a band swayscope lacks)."""
    return refused(runs, "clustr_kl", "    assert_linearity_gte: 0.9\n")


SMOLLM2_CMD = "OMP_NUM_THREADS=1 swayscope demo --model smollm2 --threads 1"


def _smollm2_table(runs: Runs, role: str) -> list[Piece]:
    result = runs.smollm2["results"][role]
    out: list[Piece] = ["\n| probe | verdict | score | z | message |\n|---|---|---|---|---|\n"]
    for p in result["probes"]:
        message = p["message"].replace("|", "\\|")
        out.append(f"| {p['name']} | **{p['verdict']}** | {fmt(p['score'])} | "
                   f"{fmt(p['z_score'], 3)} | {message} |\n")
    return out


for _role in ("trained", "noop", "random"):
    section(f"smollm2-{_role}", cheap=False)(functools.partial(_smollm2_table, role=_role))


@section("smollm2-measured", cheap=False)
def smollm2_measured(runs: Runs) -> list[Piece]:
    """README: how the SmolLM2 numbers were made, and how long the demo took."""
    data = runs.smollm2
    sweep = data["sweep"]
    train = re.search(r"trained adapter: (\d+) steps in ([\d.]+) s, loss ([\d.]+) → ([\d.]+)",
                      data["first_out"])
    assert train is not None, data["first_out"][-2000:]
    suites = [a["wall_s"] for a in sweep["adapters"] if a.get("wall_s") is not None]
    start, end = data["loads"]
    return [
        f"Measured with `{SMOLLM2_CMD}` (one torch thread; the scores below come from this "
        "command, the times are one run's and vary with the machine: here a 2-core machine "
        "other jobs were loading, load average ", Varying(f"{start:.1f}"), " at its start and ",
        Varying(f"{end:.1f}"), " at its end): a first run in a fresh home "
        "(dequantise, train, sweep) took ", Varying(_minutes(data["first_s"])),
        ", of which training ", Varying(f"{float(train.group(2)):.0f}"),
        f" s ({train.group(1)} steps, loss {train.group(3)} → {train.group(4)} on the last "
        "batch) and the three suites ", Varying(f"{sum(suites):.0f}"),
        f" s (the base view's {int(sweep['backend_stats']['base_forward_passes'])} prompts "
        "computed once); a second run, everything cached, ",
        Varying(_minutes(data["second_s"])), ".",
    ]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@section("smollm2-reading", cheap=False)
def smollm2_reading(runs: Runs) -> list[Piece]:
    """README: the numbers the paragraph under the tables reads off them."""
    by = {role: {p["name"]: p for p in r["probes"]}
          for role, r in runs.smollm2["results"].items()}
    trained, random = by["trained"]["delta_kl"]["score"], by["random"]["delta_kl"]["score"]
    return [f"{trained / random:.0f}{TIMES} more (JS {trained:.3f} vs {random:.3f} nats)"]


@section("smollm2-z", cheap=False)
def smollm2_z(runs: Runs) -> list[Piece]:
    z = next(p["z_score"] for p in runs.smollm2["results"]["trained"]["probes"]
             if p["kind"] == "delta_kl")
    return [f"{z:,.0f}"]


@section("smollm2-shift", cheap=False)
def smollm2_shift(runs: Runs) -> list[Piece]:
    probe = next(p for p in runs.smollm2["results"]["trained"]["probes"]
                 if p["kind"] == "perplexity_shift")
    ev = probe["evidence"]
    return [f"{probe['score']:+.2f} nats/token, perplexity {ev['base_perplexity']:.0f} → "
            f"{ev['ft_perplexity']:.0f}"]


# -- the docs --------------------------------------------------------------------------------


@dataclass
class Found:
    """One marked block in a doc."""

    path: Path
    name: str
    start: int
    end: int
    text: str


def marked(docs: Sequence[Path] = DOCS) -> Iterator[Found]:
    for path in docs:
        text = path.read_text(encoding="utf-8")
        for m in MARK.finditer(text):
            yield Found(path, m.group(1), m.start(2), m.end(2), m.group(2))


@dataclass
class Drift:
    where: str
    name: str
    diff: str


def compare(found: Found, block: list[Piece]) -> Drift | None:
    if pattern(block).fullmatch(_normal(found.text)):
        return None
    line = found.path.read_text(encoding="utf-8")[: found.start].count("\n") + 1
    where = f"{found.path.relative_to(REPO)}:{line}"
    fresh = render(block, ["<as measured>"] * 100)
    diff = "".join(difflib.unified_diff(
        _normal(found.text).splitlines(True), _normal(fresh).splitlines(True),
        "in the docs", "from this run",
    ))
    return Drift(where, found.name, diff)


def produce(
    names: Sequence[str], work: Path, *, timings: bool = False
) -> tuple[dict[str, list[Piece]], dict[str, str]]:
    """Run the sections ``names``: their blocks, and why any could not run."""
    runs = Runs(work, timings=timings)
    blocks: dict[str, list[Piece]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        why = SECTIONS[name].needs()
        if SECTIONS[name].timing and not timings:
            why = "says where the times were measured: written with --timings only"
        if why is not None:
            skipped[name] = why
            continue
        blocks[name] = SECTIONS[name].make(runs)
    return blocks, skipped


def check(names: Sequence[str], work: Path) -> tuple[list[Drift], dict[str, str]]:
    """Rerun ``names`` and compare with every place the docs show them."""
    blocks, skipped = produce(names, work)
    drifts = [d for f in marked() if f.name in blocks
              if (d := compare(f, blocks[f.name])) is not None]
    return drifts, skipped


def write(blocks: dict[str, list[Piece]]) -> list[str]:
    """Put the blocks into the docs (varying values without one keep the docs'); what was
    changed."""
    changed = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        out, at = [], 0
        for m in MARK.finditer(text):
            block = blocks.get(m.group(1))
            if block is None:
                continue
            # The docs' own values where this run measured none: found by the block's shape
            # (its other numbers may have changed).
            old = pattern(block, any_number=True).fullmatch(_normal(m.group(2)))
            varying = [p for p in block if isinstance(p, Varying)]
            kept = [] if old is None else [
                g for g, p in zip(old.groups(), varying, strict=True) if p.text is None
            ]
            if old is None and any(p.text is None for p in varying):
                print(f"{path.relative_to(REPO)}: {m.group(1)}: its shape changed, so the "
                      "times it shows are written as '?': rerun with --timings")
            new = render(block, kept)
            out.extend([text[at:m.start(2)], new])
            at = m.end(2)
            if new != m.group(2):
                changed.append(f"{path.relative_to(REPO)}: {m.group(1)}")
        out.append(text[at:])
        if "".join(out) != text:
            path.write_text("".join(out), encoding="utf-8")
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with the docs; exit 1 on drift")
    mode.add_argument("--write", action="store_true", help="write the numbers into the docs")
    ap.add_argument("--smollm2", action="store_true", help="also the SmolLM2 demo (minutes)")
    ap.add_argument("--timings", action="store_true",
                    help="also measure the wall times the benches' tables show (else --write "
                    "keeps the docs'); best on an idle machine")
    ap.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="these sections only")
    args = ap.parse_args()
    # This process's own runs (the sweep, the suite bench) compute on one thread too.
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    names = args.only or [n for n, s in SECTIONS.items() if s.cheap or args.smollm2]
    names = sorted(names, key=lambda n: SECTIONS[n].timing)  # the load after the runs
    with tempfile.TemporaryDirectory(prefix="docs-numbers-") as tmp:
        if args.check:
            drifts, skipped = check(names, Path(tmp))
            for name, why in skipped.items():
                print(f"skipped {name}: {why}")
            for d in drifts:
                print(f"{d.where}: {d.name} drifted:\n{d.diff}")
            print(f"{len(drifts)} drifted of {len(names) - len(skipped)} sections checked")
            raise SystemExit(1 if drifts else 0)
        blocks, skipped = produce(names, Path(tmp), timings=args.timings)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if args.write:
        for line in write(blocks) or ["nothing changed"]:
            print(line)
        return
    for name, block in blocks.items():
        print(f"== {name}\n{render(block, ['(kept from the docs)'] * 100)}")


if __name__ == "__main__":
    main()
