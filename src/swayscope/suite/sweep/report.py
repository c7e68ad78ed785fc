"""The sweep summary for people: a table (adapters down, probes across) and a small plot
per probe, on the terminal and in markdown.

Names and messages come from specs and folder names: they are rendered as plain text
with control characters escaped (never as Rich markup or markdown table syntax).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from swayscope.suite.report import METRICS_LINE
from swayscope.suite.sweep.plots import sparkline
from swayscope.suite.sweep.result import AdapterOutcome, Point, SweepResult
from swayscope.text_safety import escape_control_chars as safe
from swayscope.text_safety import escape_markdown as _md

_VERDICT_STYLE = {
    "pass": "green", "fail": "red", "warn": "yellow", "skip": "dim", "error": "red",
    "not_run": "dim", "interrupted": "yellow",
}
#: What a row without a result says about itself.
_ROW_NOTE = {"error": "not loaded", "not_run": "not run", "interrupted": "interrupted"}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def cell(point: Point) -> str:
    """``verdict score (z)`` of one probe at one checkpoint."""
    if point.verdict in _ROW_NOTE:
        return _ROW_NOTE[point.verdict]
    z = "" if point.z_score is None else f" (z {_fmt(point.z_score, 3)})"
    return f"{point.verdict} {_fmt(point.score)}{z}"


def headline(sweep: SweepResult) -> str:
    counts: dict[str, int] = {}
    for o in sweep.adapters:
        counts[o.status] = counts.get(o.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    order = "by step" if sweep.order == "step" else "as given"
    tail = "" if sweep.status == "complete" else f" — sweep {sweep.status}"
    return (
        f"sweep of suite {sweep.suite!r} ({sweep.sweep_id}): {len(sweep.adapters)} adapters "
        f"in checkpoint order ({order}): {parts}{tail}"
    )


def _hit_rate(stats: dict[str, float | int]) -> str:
    lookups = int(stats.get("cache_hits", 0)) + int(stats.get("cache_misses", 0))
    return f"{100.0 * int(stats.get('cache_hits', 0)) / lookups:.0f} %" if lookups else "-"


def _note(outcome: AdapterOutcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.status == "not_run":
        return "not run (sweep stopped first)"
    if outcome.result is not None and outcome.result.not_run:
        return "interrupted; not run: " + ", ".join(outcome.result.not_run)
    return ""


def footer_lines(sweep: SweepResult) -> list[str]:
    """The sweep's counters: its hit rate shows the base view computed once for all."""
    s = sweep.backend_stats
    hits = int(s.get("cache_hits", 0))
    lookups = hits + int(s.get("cache_misses", 0))
    ran = sum(1 for o in sweep.adapters if o.result is not None)
    per_adapter = [int(o.stats.get("base_forward_passes", 0)) for o in sweep.adapters if o.result]
    first = next((n for n in per_adapter if n), 0)
    lines = [
        f"cache: {hits}/{lookups} lookups hit ({100.0 * hits / lookups if lookups else 0.0:.1f} %)"
        f" · forward calls: {int(s.get('forward_calls', 0))}"
        f" · wall time: {sweep.wall_s:.2f} s",
        f"base view: {int(s.get('base_forward_passes', 0))} prompts in "
        f"{int(s.get('base_forward_calls', 0))} forward calls for {ran} adapters "
        f"(computed by adapters: {', '.join(map(str, per_adapter)) or '-'}; "
        f"{'shared, computed once' if sum(per_adapter) == first else 'recomputed'})",
    ]
    for error in sweep.errors:
        lines.append(f"error: {error}")
    t = sweep.telemetry
    for key, label in (
        ("trace_file", "JSONL trace: {}"),
        ("sweep_trace_id", "sweep trace id: {}"),
        ("metrics_url", METRICS_LINE),
        ("otlp_endpoint", "OTLP: {}"),
    ):
        if t.get(key):
            lines.append(label.format(t[key]))
    return lines


def _plot_lines(sweep: SweepResult, unicode: bool) -> list[tuple[str, str, str]]:
    """Per probe: its name, the sparkline, and ``first → last (min … max)``."""
    rows = []
    for name in sweep.probe_names():
        points = sweep.points(name)
        scores = [p.score for p in points]
        known = [v for v in scores if v is not None]
        if not known:
            summary = "no scores"
        else:
            summary = (
                f"{_fmt(known[0])} → {_fmt(known[-1])} "
                f"(min {_fmt(min(known))}, max {_fmt(max(known))})"
            )
        rows.append((name, sparkline(scores, unicode=unicode), summary))
    return rows


def _axis(sweep: SweepResult) -> str:
    if not sweep.adapters:
        return ""
    first, last = sweep.adapters[0].adapter, sweep.adapters[-1].adapter
    if sweep.order == "step":
        return f"score per checkpoint, step {first.step} → {last.step}"
    return f"score per adapter, {first.label} → {last.label}"


def render_terminal(sweep: SweepResult, console: Console | None = None) -> None:
    """The summary table, then one sparkline per probe (ASCII where the terminal's
    encoding has no block characters)."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)  # logs and CI: wide enough to keep rows readable
    probes = sweep.probe_names()
    table = Table(
        title=Text(f"{safe(headline(sweep))}\nverdict score (z) per adapter"),
        title_justify="left", expand=True,
    )
    table.add_column("adapter", no_wrap=True)
    for name in probes:
        table.add_column(Text(safe(name)), overflow="fold")
    table.add_column("hit", no_wrap=True, justify="right")
    table.add_column("time", no_wrap=True, justify="right")
    notes = [_note(o) for o in sweep.adapters]
    if any(notes):
        table.add_column("note", overflow="fold")
    curves = {name: sweep.points(name) for name in probes}
    for i, outcome in enumerate(sweep.adapters):
        cells = []
        for name in probes:
            text = cell(curves[name][i])
            cells.append(Text(text, style=_VERDICT_STYLE.get(text.split(" ", 1)[0], "")))
        result = outcome.result
        table.add_row(
            Text(safe(outcome.adapter.label)),
            *cells,
            _hit_rate(outcome.stats),
            f"{result.wall_s:.1f}s" if result is not None else "-",
            *([Text(safe(notes[i]))] if any(notes) else []),
        )
    console.print(table)
    unicode = (console.encoding or "").lower().replace("-", "") in ("utf8", "utf16", "utf32")
    plots = _plot_lines(sweep, unicode)
    if plots:
        console.print(Text(safe(_axis(sweep))), highlight=False)
        width = max(len(name) for name, _, _ in plots)
        for name, spark, summary in plots:
            console.print(
                Text(safe(f"  {name:<{width}}  {spark}  {summary}")), highlight=False
            )
    for line in footer_lines(sweep):
        console.print(Text(safe(line)), highlight=False, soft_wrap=True)


def render_markdown(sweep: SweepResult) -> str:
    """The summary table and the per-probe trends (sparklines) as markdown."""
    probes = sweep.probe_names()
    curves = {name: sweep.points(name) for name in probes}
    out = [
        f"# {_md(headline(sweep))}",
        "",
        "Verdict score (z) per adapter, in checkpoint order.",
        "",
        "| adapter | step | " + " | ".join(_md(n) for n in probes) + " | hit | note |",
        "|---|---|" + "---|" * len(probes) + "---|---|",
    ]
    for i, outcome in enumerate(sweep.adapters):
        step = "-" if outcome.adapter.step is None else str(outcome.adapter.step)
        cells = " | ".join(cell(curves[name][i]) for name in probes)
        out.append(
            f"| {_md(outcome.adapter.label)} | {step} | {cells} | "
            f"{_hit_rate(outcome.stats)} | {_md(_note(outcome))} |"
        )
    out.extend(["", f"## {_md(_axis(sweep))}", "", "| probe | trend | scores |", "|---|---|---|"])
    for name, spark, summary in _plot_lines(sweep, unicode=True):
        out.append(f"| {_md(name)} | `{spark}` | {_md(summary)} |")
    out.append("")
    out.extend(f"- {_md(line)}" for line in footer_lines(sweep))
    return "\n".join(out) + "\n"


__all__ = ["cell", "footer_lines", "headline", "render_markdown", "render_terminal"]
