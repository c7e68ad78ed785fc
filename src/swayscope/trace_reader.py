"""Read a JSONL forward-pass trace and summarize one run of it.

Reads what :class:`~swayscope.instrumentation.TraceWriter` writes (``"schema": 1``)
and the v0 format before it (no ``run_id``, no ``schema``). Lines that are
not a JSON object with the v0 core fields — a line cut off by a crash, a
stray write — are skipped and counted, never fatal.

Runs: lines with the same ``run_id`` form one run; v0 lines without a
``run_id`` form one anonymous run. The default run is the last one to *start*
in the file (the run whose first line comes last), which for appended runs is
the most recent one.

Only the standard library is imported at module load; ``rich`` is imported by
the terminal renderer when it runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

#: How an anonymous (v0-format, no ``run_id``) run is shown and selected.
ANONYMOUS_RUN = "(no run_id)"

FORMATS = ("terminal", "md", "json")


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One lookup line of a trace, normalized; ``line`` is its 1-based line number."""

    line: int
    run_id: str | None
    probe: str | None
    view_id: str
    op: str
    prompt_hash: str
    top_k: int | None
    hit: bool
    wall_ms: float
    ts: float | None = None
    start_ts: float | None = None
    batch_id: str | None = None
    batch_size: int | None = None
    n_tokens: int | None = None
    error: str | None = None


@dataclass(slots=True)
class TraceFile:
    """Every readable record of a file, plus how many lines could not be read."""

    path: Path
    records: list[TraceRecord]
    malformed: int = 0
    malformed_line_numbers: list[int] = field(default_factory=list)

    def run_ids(self) -> list[str | None]:
        """Distinct run ids in order of first appearance (``None``: anonymous v0 run)."""
        seen: dict[str | None, None] = {}
        for r in self.records:
            seen.setdefault(r.run_id, None)
        return list(seen)

    def select(self, run_id: str | None = None) -> tuple[str | None, list[TraceRecord]]:
        """The records of one run: ``run_id`` exactly, else a unique prefix of one, else
        :data:`ANONYMOUS_RUN`/``""`` for the v0 run; ``None`` picks the last run.

        Returns the resolved run id and its records (empty when nothing matches).
        """
        runs = self.run_ids()
        if not runs:
            return run_id, []
        chosen: str | None
        if run_id is None:
            chosen = runs[-1]
        elif run_id in ("", ANONYMOUS_RUN):
            chosen = None
            if None not in runs:
                return run_id, []
        elif run_id in runs:
            chosen = run_id
        else:
            matches = [r for r in runs if r is not None and r.startswith(run_id)]
            if len(matches) != 1:
                return run_id, []
            chosen = matches[0]
        return chosen, [r for r in self.records if r.run_id == chosen]


# -- reading --------------------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_line(text: str, line: int) -> TraceRecord | None:
    """One line → a record, or ``None`` when it is not a readable lookup line.

    Required (the v0 core): ``view_id`` and ``op`` strings, ``hit`` a bool,
    ``wall_ms`` a finite number, ``probe`` a string or null when present. Every
    other field is optional; a wrong type there is dropped, not fatal.
    """
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    view_id, op, hit = obj.get("view_id"), obj.get("op"), obj.get("hit")
    wall_ms = _opt_float(obj.get("wall_ms"))
    probe = obj.get("probe")
    if (
        not isinstance(view_id, str)
        or not isinstance(op, str)
        or not isinstance(hit, bool)
        or wall_ms is None
        or (probe is not None and not isinstance(probe, str))
    ):
        return None
    return TraceRecord(
        line=line,
        run_id=_opt_str(obj.get("run_id")),
        probe=probe,
        view_id=view_id,
        op=op,
        prompt_hash=_opt_str(obj.get("prompt_hash")) or "",
        top_k=_opt_int(obj.get("top_k")),
        hit=hit,
        wall_ms=wall_ms,
        ts=_opt_float(obj.get("ts")),
        start_ts=_opt_float(obj.get("start_ts")),
        batch_id=_opt_str(obj.get("batch_id")),
        batch_size=_opt_int(obj.get("batch_size")),
        n_tokens=_opt_int(obj.get("n_tokens")),
        error=_opt_str(obj.get("error")),
    )


def read_trace(path: Path) -> TraceFile:
    """Read every line of ``path``; unreadable lines (bad JSON, bad UTF-8, missing the
    v0 core fields, cut off mid-line) are counted in ``malformed``. Blank lines
    are ignored. Raises ``OSError`` when the file cannot be opened."""
    records: list[TraceRecord] = []
    bad: list[int] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(number)
                continue
            record = parse_line(text, number)
            if record is None:
                bad.append(number)
            else:
                records.append(record)
    return TraceFile(path=path, records=records, malformed=len(bad), malformed_line_numbers=bad)


# -- summarizing ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), as numpy's default; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(slots=True)
class GroupRow:
    """Lookups of one probe, view or op."""

    name: str
    events: int
    hits: int
    misses: int
    errors: int
    hit_rate: float
    total_ms: float
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, name: str, records: Sequence[TraceRecord]) -> GroupRow:
        walls = [r.wall_ms for r in records]
        hits = sum(1 for r in records if r.hit)
        return cls(
            name=name,
            events=len(records),
            hits=hits,
            misses=len(records) - hits,
            errors=sum(1 for r in records if r.error),
            hit_rate=hits / len(records) if records else 0.0,
            total_ms=sum(walls),
            p50_ms=percentile(walls, 50),
            p95_ms=percentile(walls, 95),
        )


@dataclass(slots=True)
class TraceSummary:
    """Everything the renderers show about one run of a trace."""

    path: str
    run_id: str | None
    runs: list[tuple[str | None, int]]
    malformed_lines: int
    totals: GroupRow
    forward_calls: int
    tokens: int | None
    span_s: float | None
    by_probe: list[GroupRow]
    by_view: list[GroupRow]
    by_op: list[GroupRow]
    slowest: list[TraceRecord]

    @property
    def run_label(self) -> str:
        return self.run_id if self.run_id is not None else ANONYMOUS_RUN

    def to_dict(self) -> dict[str, Any]:
        totals = asdict(self.totals)
        del totals["name"]
        return {
            "file": self.path,
            "run_id": self.run_id,
            "runs": [{"run_id": rid, "events": n} for rid, n in self.runs],
            "malformed_lines": self.malformed_lines,
            "totals": {
                **totals,
                "forward_calls": self.forward_calls,
                "n_tokens": self.tokens,
                "span_s": self.span_s,
            },
            "by_probe": [asdict(g) for g in self.by_probe],
            "by_view": [asdict(g) for g in self.by_view],
            "by_op": [asdict(g) for g in self.by_op],
            "slowest": [asdict(r) for r in self.slowest],
        }


def _groups(
    records: Iterable[TraceRecord], key: Callable[[TraceRecord], str | None]
) -> list[GroupRow]:
    groups: dict[str, list[TraceRecord]] = {}
    for r in records:
        name = key(r)
        groups.setdefault(name if name is not None else "(none)", []).append(r)
    return [GroupRow.of(name, rs) for name, rs in groups.items()]


def summarize(trace: TraceFile, run_id: str | None = None, top: int = 10) -> TraceSummary | None:
    """Summarize one run of ``trace`` (see :meth:`TraceFile.select`); ``None`` if it has no events.

    Probes are listed in the order they ran; views and ops by total time, largest first.
    """
    chosen, records = trace.select(run_id)
    if not records:
        return None
    counts: dict[str | None, int] = {}
    for r in trace.records:
        counts[r.run_id] = counts.get(r.run_id, 0) + 1
    misses = [r for r in records if not r.hit]
    # A batched miss shares its batch_id with the other rows of one model call; v0
    # lines have no batch_id, so each of their misses was its own call.
    forward_calls = len({r.batch_id for r in misses if r.batch_id is not None}) + sum(
        1 for r in misses if r.batch_id is None
    )
    known_tokens = [r.n_tokens for r in misses if r.n_tokens is not None and not r.error]
    starts = [
        r.start_ts if r.start_ts is not None else r.ts - r.wall_ms / 1000.0
        for r in records
        if r.ts is not None
    ]
    ends = [r.ts for r in records if r.ts is not None]
    return TraceSummary(
        path=str(trace.path),
        run_id=chosen,
        runs=list(counts.items()),
        malformed_lines=trace.malformed,
        totals=GroupRow.of("all", records),
        forward_calls=forward_calls,
        tokens=sum(known_tokens) if known_tokens else None,
        span_s=(max(ends) - min(starts)) if ends and starts else None,
        by_probe=_groups(records, lambda r: r.probe),
        by_view=sorted(_groups(records, lambda r: r.view_id), key=lambda g: -g.total_ms),
        by_op=sorted(_groups(records, lambda r: r.op), key=lambda g: -g.total_ms),
        slowest=sorted(records, key=lambda r: -r.wall_ms)[: max(top, 0)],
    )


# -- rendering ------------------------------------------------------------------------------------

_GROUP_HEADERS = ("events", "hits", "misses", "hit rate", "total ms", "p50 ms", "p95 ms")
_SLOW_HEADERS = ("#", "line", "probe", "view", "op", "prompt", "hit", "ms", "batch", "error")


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _rate(value: float) -> str:
    return f"{value * 100:.1f}%"


def _group_cells(g: GroupRow) -> list[str]:
    return [
        str(g.events),
        str(g.hits),
        str(g.misses),
        _rate(g.hit_rate),
        _ms(g.total_ms),
        _ms(g.p50_ms),
        _ms(g.p95_ms),
    ]


def _slow_cells(i: int, r: TraceRecord) -> list[str]:
    error = (r.error or "")[:60]
    return [
        str(i),
        str(r.line),
        r.probe or "(none)",
        r.view_id,
        r.op,
        r.prompt_hash,
        "hit" if r.hit else "miss",
        _ms(r.wall_ms),
        str(r.batch_size) if r.batch_size is not None else "",
        error,
    ]


def _headline(s: TraceSummary) -> list[str]:
    t = s.totals
    lines = [
        f"trace {s.path} · run {s.run_label} ({len(s.runs)} run(s) in file)",
        f"{t.events} events · {t.hits} hits · {t.misses} misses · hit rate {_rate(t.hit_rate)}"
        f" · {s.forward_calls} forward calls · {_ms(t.total_ms)} ms in lookups"
        + (f" · {t.errors} errors" if t.errors else ""),
    ]
    if s.malformed_lines:
        lines.append(f"skipped {s.malformed_lines} malformed line(s)")
    return lines


def render_markdown(s: TraceSummary) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return out

    out = [f"# Trace summary: run `{s.run_label}`", ""]
    out += [f"- {line}" for line in _headline(s)]
    for title, groups, first in (
        ("By probe", s.by_probe, "probe"),
        ("By view", s.by_view, "view"),
        ("By op", s.by_op, "op"),
    ):
        out += ["", f"## {title}", ""]
        out += table((first, *_GROUP_HEADERS), ([g.name, *_group_cells(g)] for g in groups))
    if s.slowest:
        out += ["", f"## Slowest {len(s.slowest)} events", ""]
        out += table(_SLOW_HEADERS, (_slow_cells(i, r) for i, r in enumerate(s.slowest, 1)))
    return "\n".join(out) + "\n"


def render_json(s: TraceSummary) -> str:
    return json.dumps(s.to_dict(), indent=2) + "\n"


def render_terminal(s: TraceSummary, file: IO[str] | None = None) -> None:
    """Rich tables on ``file`` (default: the current ``sys.stdout``)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = file if file is not None else sys.stdout
    console = Console(file=out, width=None if out.isatty() else 140, highlight=False)
    for line in _headline(s):
        console.print(escape(line))
    for title, groups, first in (
        ("By probe", s.by_probe, "probe"),
        ("By view", s.by_view, "view"),
        ("By op", s.by_op, "op"),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column(first)
        for header in _GROUP_HEADERS:
            table.add_column(header, justify="right")
        for g in groups:
            table.add_row(escape(g.name), *_group_cells(g))
        console.print(table)
    if s.slowest:
        table = Table(title=f"Slowest {len(s.slowest)} events", title_justify="left")
        for header in _SLOW_HEADERS:
            table.add_column(header, justify="right" if header in ("#", "line", "ms") else "left")
        for i, r in enumerate(s.slowest, 1):
            table.add_row(*(escape(c) for c in _slow_cells(i, r)))
        console.print(table)


# -- the command ----------------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"swayscope trace summarize: {message}", file=sys.stderr)


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
        trace = read_trace(path)
    except OSError as exc:
        _err(f"cannot read trace file {str(path)!r}: {exc.strerror or exc}")
        return 2
    if trace.malformed:
        shown = ", ".join(map(str, trace.malformed_line_numbers[:5]))
        more = ", …" if trace.malformed > 5 else ""
        _err(f"skipped {trace.malformed} malformed line(s) (line {shown}{more})")
    summary = summarize(trace, run_id, top)
    if summary is None:
        if not trace.records:
            _err(f"no events in {str(path)!r}")
        else:
            runs = ", ".join(r if r is not None else ANONYMOUS_RUN for r in trace.run_ids())
            _err(f"no events for run_id {run_id!r} in {str(path)!r}; runs in the file: {runs}")
        return 1
    if fmt == "json":
        sys.stdout.write(render_json(summary))
    elif fmt == "md":
        sys.stdout.write(render_markdown(summary))
    else:
        render_terminal(summary)
    return 0


__all__ = [
    "ANONYMOUS_RUN",
    "FORMATS",
    "GroupRow",
    "TraceFile",
    "TraceRecord",
    "TraceSummary",
    "parse_line",
    "percentile",
    "read_trace",
    "render_json",
    "render_markdown",
    "render_terminal",
    "summarize",
    "summarize_command",
]
