"""Render a SuiteResult: terminal table, markdown, JSON."""

from __future__ import annotations

from swayscope.suite.result import SuiteResult
from swayscope.text_safety import escape_control_chars as safe
from swayscope.text_safety import escape_markdown as _md

_VERDICT_STYLE = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim", "error": "red"}


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _mib(n: object) -> str:
    return f"{int(n) / 2**20:.1f} MiB" if isinstance(n, int) else "-"


#: The report's line for the metrics endpoint: printed when the run is over, so it says
#: the endpoint was served during the run (it stops with the command, or after a linger).
METRICS_LINE = "metrics: served at {} during the run"


def footer_lines(result: SuiteResult) -> list[str]:
    s = result.backend_stats
    hits = int(s.get("cache_hits", 0))
    lookups = hits + int(s.get("cache_misses", 0))
    lines = [
        f"cache: {hits}/{lookups} lookups hit ({100.0 * hits / lookups if lookups else 0.0:.1f} %)"
        f" · forward calls: {int(s.get('forward_calls', 0))}"
        f" · mean batch size: {float(s.get('avg_batch_size', 0.0)):.2f}"
        f" · wall time: {result.wall_s:.2f} s"
        + (f" · threads: {result.threads}" if result.threads else "")
        + (f" ({result.threads_reason})" if result.threads and result.threads_reason else ""),
    ]
    disk = result.disk_cache
    if disk:
        from_disk = int(s.get("disk_hits", 0))
        resumed = f" (resumed run {result.resumed_from})" if result.resumed_from else ""
        lines.append(
            f"disk cache: {from_disk:,} of {lookups:,} lookups from the disk cache{resumed}"
            f" · {disk.get('entries', 0):,} entries, {_mib(disk.get('bytes', 0))} in "
            f"{disk.get('dir')}"
            + ("" if disk.get("enabled", True) else " · off after a failure (see the warning)")
        )
    reused = int(s.get("prefix_tokens_reused", 0))
    if reused:
        lines.append(
            f"tokens: {int(s.get('tokens_computed', 0))} computed for "
            f"{int(s.get('n_tokens', 0))} scored ({reused} from shared prefixes)"
        )
    generated = int(s.get("tokens_generated", 0))
    if generated:
        lines.append(f"generated: {generated:,} tokens by greedy generation")
    workers = result.models.get("workers")
    if isinstance(workers, dict):
        failures = int(workers.get("failures", 0))
        lines.append(
            f"workers: {workers.get('count')} on {workers.get('cluster')}, "
            f"{workers.get('threads_per_worker')} thread(s) each"
            + (
                f" · {failures} part(s) of forward calls lost with a worker, each computed "
                "again on another (swayscope_worker_failures_total)"
                if failures
                else " · no worker lost"
            )
        )
    t = result.telemetry
    errors = {k: v for k, v in (t.get("exporter_errors") or {}).items() if v}
    if errors or t.get("spans_dropped"):
        lost = ", ".join(f"{name} {n}" for name, n in sorted(errors.items()))
        lines.append(
            f"telemetry losses: exporter errors {lost or 0}; spans dropped "
            f"{t.get('spans_dropped') or 0} (the run itself was not affected)"
        )
    for key, label in (
        ("trace_file", "JSONL trace: {}"),
        ("trace_id", "run trace id (probe traces: search swayscope.run_id): {}"),
        ("metrics_url", METRICS_LINE),
        ("otlp_endpoint", "OTLP: {}"),
        ("pushgateway", "pushgateway: {}"),
    ):
        if t.get(key):
            lines.append(label.format(t[key]))
    return lines


def _headline(result: SuiteResult) -> str:
    counts: dict[str, int] = {}
    for p in result.probes:
        counts[p.verdict] = counts.get(p.verdict, 0) + 1
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    status = "" if result.status == "complete" else f" — run {result.status}"
    return f"suite {result.suite!r} run {result.run_id}: {parts or 'no probes ran'}{status}"


def render_terminal(result: SuiteResult) -> None:
    """The result as a table. User text (names, messages) is rendered as plain text, never
    parsed as Rich markup: a name like ``[/]`` or ``[INST]`` shows as itself."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and CI: wide enough to keep rows readable
    table = Table(title=Text(safe(_headline(result))), title_justify="left", expand=True)
    table.add_column("probe", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("score", no_wrap=True, justify="right")
    table.add_column("z", no_wrap=True, justify="right")
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("evidence", ratio=1, overflow="fold")
    for p in result.probes:
        table.add_row(
            Text(safe(p.name if p.name == p.kind else f"{p.name} ({p.kind})")),
            Text(p.verdict, style=_VERDICT_STYLE.get(p.verdict, "")),
            _fmt(p.score),
            _fmt(p.z_score, 3),
            f"{p.duration_s:.2f}s",
            Text(safe(p.error or p.message)),
        )
    console.print(table)
    # Lines under the table are not wrapped: a log keeps each whole (a long folder path
    # would break one at the console's width), and a terminal wraps them itself.
    for name in result.not_run:
        console.print(Text(safe(f"not run: {name}"), style="dim"), soft_wrap=True)
    for note in result.notes:
        console.print(Text(safe(f"note: {note}"), style="dim"), highlight=False, soft_wrap=True)
    for line in footer_lines(result):
        console.print(Text(safe(line)), highlight=False, soft_wrap=True)


def render_markdown(result: SuiteResult) -> str:
    out = [
        f"# {_md(_headline(result))}",
        "",
        "| probe | kind | verdict | score | z | time | message |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in result.probes:
        out.append(
            f"| {_md(p.name)} | {_md(p.kind)} | **{p.verdict}** | {_fmt(p.score)} | "
            f"{_fmt(p.z_score, 3)} | {p.duration_s:.2f}s | {_md(p.error or p.message)} |"
        )
    out.extend(["", *[f"- not run: {_md(n)}" for n in result.not_run]])
    out.extend(f"- note: {_md(n)}" for n in result.notes)
    out.extend(f"- {_md(line)}" for line in footer_lines(result))
    return "\n".join(out) + "\n"


def render_json(result: SuiteResult) -> str:
    return result.to_json()


__all__ = [
    "METRICS_LINE",
    "footer_lines",
    "render_json",
    "render_markdown",
    "render_terminal",
]
