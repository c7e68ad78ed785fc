"""A trace summary as a terminal table, markdown or strict JSON; the summarize command."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from swayscope.percentiles import EXACT_LIMIT, RELATIVE_ERROR
from swayscope.text_safety import escape_control_chars
from swayscope.trace_reader.records import (
    ANONYMOUS_RUN,
    FORMATS,
    NO_PROBE,
    OTHER,
    SHOWN_RUNS,
    TraceRecord,
)
from swayscope.trace_reader.summary import (
    MAX_GROUP_KEYS,
    MAX_RUNS,
    GroupRow,
    TraceSummary,
    summarize_file,
)

_GROUP_HEADERS = ("events", "hits", "misses", "hit rate", "total ms", "p50 ms", "p95 ms")
_SLOW_HEADERS = ("#", "line", "probe", "view", "op", "prompt", "hit", "ms", "batch", "error")


def _ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1e12 else f"{value:.4g}"


def _rate(value: float) -> str:
    return f"{value * 100:.1f}%"


def _group_cells(g: GroupRow) -> list[str]:
    return [
        escape_control_chars(g.name),
        str(g.events),
        str(g.hits),
        str(g.misses),
        _rate(g.hit_rate),
        _ms(g.total_ms),
        _ms(g.p50_ms),
        _ms(g.p95_ms),
    ]


def _slow_cells(i: int, r: TraceRecord) -> list[str]:
    return [
        str(i),
        str(r.line),
        escape_control_chars(r.probe or NO_PROBE),
        escape_control_chars(r.view_id),
        escape_control_chars(r.op),
        escape_control_chars(r.prompt_hash),
        "hit" if r.hit else "miss",
        _ms(r.wall_ms),
        str(r.batch_size) if r.batch_size is not None else "",
        escape_control_chars((r.error or "")[:60]),
    ]


def _headline(s: TraceSummary) -> list[str]:
    """The summary's first lines, control characters already escaped."""
    t = s.totals
    lines = [
        f"trace {escape_control_chars(s.path)} · run {escape_control_chars(s.run_label)}"
        f" ({len(s.runs)} run(s) in file)",
        f"{t.events} events · {t.hits} hits · {t.misses} misses · hit rate {_rate(t.hit_rate)}"
        f" · {s.forward_calls} forward calls · {_ms(t.total_ms)} ms in lookups"
        + (f" · {t.errors} errors" if t.errors else ""),
    ]
    if s.malformed_lines:
        lines.append(f"skipped {s.malformed_lines} malformed line(s)")
    if s.other_runs_events:
        lines.append(
            f"{s.other_runs_events} events of runs past the first {MAX_RUNS} run ids "
            "are not listed"
        )
    for table, n in s.folded.items():
        lines.append(
            f"{n} lookups of {table} names past the first {MAX_GROUP_KEYS} are in the "
            f"{OTHER} row"
        )
    if not s.percentiles_exact:
        lines.append(
            f"p50/p95 of rows with over {EXACT_LIMIT} lookups are estimates "
            f"(within {RELATIVE_ERROR:.0%})"
        )
    return lines


def _tables(s: TraceSummary) -> list[tuple[str, str, list[GroupRow]]]:
    return [
        ("By probe", "probe", s.by_probe),
        ("By view", "view", s.by_view),
        ("By op", "op", s.by_op),
    ]


def render_markdown(s: TraceSummary) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|")

    def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return out

    out = [f"# Trace summary: run `{escape_control_chars(s.run_label)}`", ""]
    out += [f"- {line}" for line in _headline(s)]
    for title, first, groups in _tables(s):
        out += ["", f"## {title}", ""]
        out += table((first, *_GROUP_HEADERS), (_group_cells(g) for g in groups))
    if s.slowest:
        out += ["", f"## Slowest {len(s.slowest)} events", ""]
        out += table(_SLOW_HEADERS, (_slow_cells(i, r) for i, r in enumerate(s.slowest, 1)))
    return "\n".join(out) + "\n"


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def render_json(s: TraceSummary) -> str:
    """Strict JSON (RFC 8259): a total or span too large for a float is ``null``."""
    return json.dumps(_finite_or_none(s.to_dict()), indent=2, allow_nan=False) + "\n"


def render_terminal(s: TraceSummary, file: IO[str] | None = None) -> None:
    """Rich tables on ``file`` (default: the current ``sys.stdout``); text from the trace
    is passed as :class:`rich.text.Text`, so no name is read as markup or emoji."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = file if file is not None else sys.stdout
    console = Console(
        file=out, width=None if out.isatty() else 140, highlight=False, markup=False, emoji=False
    )
    for line in _headline(s):
        console.print(Text(line))
    for title, first, groups in _tables(s):
        table = Table(title=Text(title), title_justify="left")
        table.add_column(Text(first))
        for header in _GROUP_HEADERS:
            table.add_column(Text(header), justify="right")
        for g in groups:
            table.add_row(*(Text(c) for c in _group_cells(g)))
        console.print(table)
    if s.slowest:
        table = Table(title=Text(f"Slowest {len(s.slowest)} events"), title_justify="left")
        for header in _SLOW_HEADERS:
            table.add_column(
                Text(header), justify="right" if header in ("#", "line", "ms") else "left"
            )
        for i, r in enumerate(s.slowest, 1):
            table.add_row(*(Text(c) for c in _slow_cells(i, r)))
        console.print(table)


# -- the command ----------------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"swayscope trace summarize: {escape_control_chars(message)}", file=sys.stderr)


def summarize_command(path: Path, run_id: str | None, fmt: str, top: int) -> int:
    """``swayscope trace summarize``: print the summary of one run; return the exit code.

    0: printed. 1: no events (empty file, or no such run). 2: the file is missing
    or unreadable, or an argument is bad. Messages go to stderr, the summary to stdout.
    """
    if fmt not in FORMATS:
        _err(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        return 2
    if top < 0:
        _err(f"--top must be 0 or more; got {top}")
        return 2
    path = Path(path)
    if not path.exists():
        _err(f"trace file not found: {str(path)!r}")
        return 2
    if path.is_dir():
        _err(f"{str(path)!r} is a directory, not a JSONL trace file")
        return 2
    try:
        scan = summarize_file(path, run_id, top)
    except OSError as exc:
        _err(f"cannot read trace file {str(path)!r}: {exc.strerror or exc}")
        return 2
    if scan.malformed:
        shown = ", ".join(map(str, scan.malformed_line_numbers))
        more = ", …" if scan.malformed > len(scan.malformed_line_numbers) else ""
        _err(f"skipped {scan.malformed} malformed line(s) (line {shown}{more})")
    summary = scan.summary
    if summary is None:
        if not scan.events:
            _err(f"no events in {str(path)!r}")
        else:
            names = [r if r is not None else ANONYMOUS_RUN for r in scan.run_ids]
            runs = ", ".join(names[:SHOWN_RUNS])
            if len(names) > SHOWN_RUNS:
                runs += f", … ({len(names) - SHOWN_RUNS} more)"
            _err(f"no events for run_id {run_id!r} in {str(path)!r}; runs in the file: {runs}")
        return 1
    if fmt == "json":
        sys.stdout.write(render_json(summary))
    elif fmt == "md":
        sys.stdout.write(render_markdown(summary))
    else:
        render_terminal(summary)
    return 0
