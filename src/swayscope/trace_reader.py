"""Read a JSONL forward-pass trace and summarize one run of it.

Reads what :class:`~swayscope.instrumentation.TraceWriter` writes (``"schema": 1``)
and the v0 format before it (no ``run_id``, no ``schema``). Lines that are
not a JSON object with the v0 core fields — a line cut off by a crash, a
stray write, a line nested too deep to parse, a line over
:data:`MAX_LINE_BYTES` — are skipped and counted, never fatal.

Runs: lines with the same ``run_id`` form one run; v0 lines without a
``run_id`` form one anonymous run. The default run is the last one to *start*
in the file (the run whose first line comes last), which for appended runs is
the most recent one.

``swayscope trace summarize`` streams the file once in bounded memory
(:func:`summarize_file`): no line is kept, only the aggregates of the run
being summarized and an event count per run. The bounds, each documented
where it is defined: :data:`MAX_LINE_BYTES`, :data:`MAX_RUNS`,
:data:`MAX_GROUP_KEYS` (names past it are folded into :data:`OTHER`),
:data:`MAX_NAME_CHARS`, :data:`RECENT_BATCHES`, and the percentile sketch's
(:mod:`swayscope.percentiles`: exact p50/p95 up to 2048 lookups per row, within
1% beyond); the slowest-events list holds ``--top`` records. :func:`read_trace`
keeps every record in memory, for library use on small files.

Everything rendered for a terminal or markdown has its control characters
shown as escapes (:mod:`swayscope.text_safety`), and the terminal renderer
passes text to Rich as plain text, never as markup. Only the standard
library is imported at module load; ``rich`` is imported by the terminal
renderer when it runs.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from swayscope.percentiles import EXACT_LIMIT, RELATIVE_ERROR, PercentileSketch, percentile
from swayscope.text_safety import escape_control_chars

#: How an anonymous (v0-format, no ``run_id``) run is shown and selected.
ANONYMOUS_RUN = "(no run_id)"

FORMATS = ("terminal", "md", "json")

#: Longest line read (a line with a captured 20k-token prompt is well under 1 MiB);
#: a longer one is skipped in chunks, never held whole, and counted as malformed.
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Distinct run ids counted per file; lines of further runs are counted together
#: (``other_runs_events``) and cannot be selected.
MAX_RUNS = 10_000
#: Distinct probe, view and op names given their own row per run (each); lookups of
#: further names are folded into one :data:`OTHER` row and counted in ``folded``.
MAX_GROUP_KEYS = 256
#: Longest name (probe, view, op, run id) kept as it is; a longer one is cut and
#: tagged with a hash of the whole, so two long names stay two rows.
MAX_NAME_CHARS = 256
#: Batch ids remembered to count forward calls: the rows of one batch come together,
#: so a batch counts once unless this many other batches interleave with its rows.
RECENT_BATCHES = 4096
#: Line numbers of malformed lines kept to show.
SHOWN_BAD_LINES = 5
#: Run ids listed in a "no such run" message.
SHOWN_RUNS = 20

#: The row of lookups whose probe, view or op name is past :data:`MAX_GROUP_KEYS`.
OTHER = "(other)"
_NO_PROBE = "(none)"
_SKIP_CHUNK = 1024 * 1024


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
    """A finite number as a float; anything else (an integer too large for a float too)
    as None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


_Core = tuple[str | None, str, str, bool, float]
"""``(probe, view_id, op, hit, wall_ms)``: the v0 core fields of a valid line."""


def _core_fields(obj: Any) -> _Core | None:
    """``(probe, view_id, op, hit, wall_ms)`` of a parsed line, or ``None`` if it lacks them.

    Required (the v0 core): ``view_id`` and ``op`` strings, ``hit`` a bool,
    ``wall_ms`` a finite number, ``probe`` a string or null when present.
    """
    if type(obj) is not dict:
        return None
    view_id, op, hit, probe = obj.get("view_id"), obj.get("op"), obj.get("hit"), obj.get("probe")
    wall_ms = _opt_float(obj.get("wall_ms"))
    if (
        type(view_id) is not str
        or type(op) is not str
        or type(hit) is not bool
        or wall_ms is None
        or (probe is not None and type(probe) is not str)
    ):
        return None
    return probe, view_id, op, hit, wall_ms


def _record(obj: dict[str, Any], line: int, core: _Core) -> TraceRecord:
    probe, view_id, op, hit, wall_ms = core
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


def _loads(text: str) -> Any:
    """``json.loads``, or ``None`` for text that does not parse, for any reason."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None


def parse_line(text: str, line: int) -> TraceRecord | None:
    """One line → a record, or ``None`` when it is not a readable lookup line.

    Required (the v0 core): ``view_id`` and ``op`` strings, ``hit`` a bool,
    ``wall_ms`` a finite number, ``probe`` a string or null when present. Every
    other field is optional; a wrong type there is dropped, not fatal.
    """
    obj = _loads(text)
    core = _core_fields(obj)
    return None if core is None else _record(obj, line, core)


def _raw_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` for each non-blank line; ``None`` for one over the limit."""
    readline = fh.readline
    number = 0
    while raw := readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        elif raw.strip():
            yield number, raw


def _parsed_lines(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON or None)``; bad UTF-8, bad JSON and long lines are None."""
    for number, raw in _raw_lines(fh):
        try:
            text = raw.decode("utf-8") if raw is not None else None
        except UnicodeDecodeError:
            text = None
        yield number, (_loads(text) if text is not None else None)


def read_trace(path: Path) -> TraceFile:
    """Read every line of ``path`` into memory; unreadable lines (bad JSON, bad UTF-8,
    missing the v0 core fields, cut off mid-line, nested too deep, too long) are
    counted in ``malformed``. Blank lines are ignored. Raises ``OSError`` when the
    file cannot be opened. For large files use :func:`summarize_file`."""
    records: list[TraceRecord] = []
    bad: list[int] = []
    with path.open("rb") as fh:
        for number, obj in _parsed_lines(fh):
            core = _core_fields(obj)
            if core is None:
                bad.append(number)
            else:
                records.append(_record(obj, number, core))
    return TraceFile(path=path, records=records, malformed=len(bad), malformed_line_numbers=bad)


# -- aggregating ----------------------------------------------------------------------------------


def _bounded(name: str) -> str:
    """``name``, or for one over :data:`MAX_NAME_CHARS` its start and a hash of the whole."""
    if len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return f"{name[: MAX_NAME_CHARS - 40]}…({len(name)} chars, {digest})"


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
        stats = _Group()
        for r in records:
            stats.add(r.hit, r.wall_ms, bool(r.error))
        return stats.row(name)


class _Group:
    """Running totals and latency percentiles of one row."""

    __slots__ = ("errors", "events", "hits", "latency", "total_ms")

    def __init__(self) -> None:
        self.events = self.hits = self.errors = 0
        self.total_ms = 0.0
        self.latency = PercentileSketch()

    def add(self, hit: bool, wall_ms: float, error: bool) -> None:
        self.events += 1
        self.hits += hit
        self.errors += error
        self.total_ms += wall_ms
        self.latency.add(wall_ms)

    def row(self, name: str) -> GroupRow:
        return GroupRow(
            name=name,
            events=self.events,
            hits=self.hits,
            misses=self.events - self.hits,
            errors=self.errors,
            hit_rate=self.hits / self.events if self.events else 0.0,
            total_ms=self.total_ms,
            p50_ms=self.latency.percentile(50),
            p95_ms=self.latency.percentile(95),
        )


class _Groups:
    """Rows by name, at most :data:`MAX_GROUP_KEYS`; later names share the OTHER row."""

    __slots__ = ("folded", "other", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, _Group] = {}
        self.other: _Group | None = None
        self.folded = 0

    def get(self, name: str) -> _Group:
        group = self.rows.get(name)
        if group is not None:
            return group
        if len(name) > MAX_NAME_CHARS:
            name = _bounded(name)
            group = self.rows.get(name)
            if group is not None:
                return group
        if len(self.rows) < MAX_GROUP_KEYS:
            group = self.rows[name] = _Group()
            return group
        self.folded += 1
        if self.other is None:
            self.other = _Group()
        return self.other

    def result(self) -> list[GroupRow]:
        rows = [group.row(name) for name, group in self.rows.items()]
        if self.other is not None:
            rows.append(self.other.row(OTHER))
        return rows

    def exact(self) -> bool:
        groups = [*self.rows.values(), *([self.other] if self.other is not None else [])]
        return all(g.latency.exact for g in groups)


class _RunAggregate:
    """Everything the summary shows about one run, built one lookup at a time."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.totals = _Group()
        self.by_probe = _Groups()
        self.by_view = _Groups()
        self.by_op = _Groups()
        self.forward_calls = 0
        self._recent_batches: dict[str, None] = {}
        self.tokens: int | None = None
        self.first_start = math.inf
        self.last_end = -math.inf
        self._slowest: list[tuple[float, int, TraceRecord]] = []

    def add(
        self, line: int, core: _Core,
        obj: dict[str, Any] | TraceRecord,
    ) -> None:
        probe, view_id, op, hit, wall_ms = core
        if isinstance(obj, TraceRecord):
            ts, start_ts, error = obj.ts, obj.start_ts, obj.error
            batch_id, n_tokens = obj.batch_id, obj.n_tokens
        else:
            ts, start_ts = _opt_float(obj.get("ts")), _opt_float(obj.get("start_ts"))
            error = _opt_str(obj.get("error"))
            batch_id, n_tokens = _opt_str(obj.get("batch_id")), _opt_int(obj.get("n_tokens"))
        failed = bool(error)
        self.totals.add(hit, wall_ms, failed)
        self.by_probe.get(probe if probe is not None else _NO_PROBE).add(hit, wall_ms, failed)
        self.by_view.get(view_id).add(hit, wall_ms, failed)
        self.by_op.get(op).add(hit, wall_ms, failed)
        if not hit:
            self._count_call(batch_id)
            if n_tokens is not None and not error:
                self.tokens = (self.tokens or 0) + n_tokens
        if ts is not None:
            start = start_ts if start_ts is not None else ts - wall_ms / 1000.0
            if start < self.first_start:
                self.first_start = start
            if ts > self.last_end:
                self.last_end = ts
        slowest = self._slowest
        if len(slowest) < self.top or (slowest and wall_ms >= slowest[0][0]):
            self._keep_if_slow(line, wall_ms, obj, core)

    def _count_call(self, batch_id: str | None) -> None:
        # A batched miss shares its batch_id with the other rows of one model call; v0
        # lines have no batch_id, so each of their misses was its own call.
        if batch_id is None:
            self.forward_calls += 1
            return
        if batch_id in self._recent_batches:
            return
        self.forward_calls += 1
        self._recent_batches[batch_id] = None
        if len(self._recent_batches) > RECENT_BATCHES:
            del self._recent_batches[next(iter(self._recent_batches))]

    def _keep_if_slow(
        self, line: int, wall_ms: float, obj: dict[str, Any] | TraceRecord,
        core: _Core,
    ) -> None:
        # Slowest first; of equal times, the earlier line (a min-heap on (wall, -line)).
        key = (wall_ms, -line)
        if len(self._slowest) >= self.top and key <= self._slowest[0][:2]:
            return
        record = obj if isinstance(obj, TraceRecord) else _shortened(_record(obj, line, core))
        item = (wall_ms, -line, record)
        if len(self._slowest) < self.top:
            heapq.heappush(self._slowest, item)
        else:
            heapq.heapreplace(self._slowest, item)

    def slowest(self) -> list[TraceRecord]:
        return [r for _, _, r in sorted(self._slowest, key=lambda i: (-i[0], -i[1]))]


def _shortened(record: TraceRecord) -> TraceRecord:
    """A record with every string bounded, so ``--top`` records cost bounded memory."""
    def cut(value: str | None) -> str | None:
        return value if value is None else _bounded(value)

    return TraceRecord(
        line=record.line, run_id=cut(record.run_id), probe=cut(record.probe),
        view_id=_bounded(record.view_id), op=_bounded(record.op),
        prompt_hash=_bounded(record.prompt_hash), top_k=record.top_k, hit=record.hit,
        wall_ms=record.wall_ms, ts=record.ts, start_ts=record.start_ts,
        batch_id=cut(record.batch_id), batch_size=record.batch_size,
        n_tokens=record.n_tokens, error=cut(record.error),
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
    other_runs_events: int = 0
    """Events of runs past :data:`MAX_RUNS`, counted together."""
    folded: dict[str, int] = field(default_factory=dict)
    """Lookups folded into the :data:`OTHER` row, per table (``probe``, ``view``, ``op``)."""
    percentiles_exact: bool = True
    """False when a row had more than EXACT_LIMIT lookups: its p50/p95 are within 1%."""

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
            "other_runs_events": self.other_runs_events,
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
            "folded": dict(self.folded),
            "percentiles_exact": self.percentiles_exact,
            "slowest": [asdict(r) for r in self.slowest],
        }


class _RunSelector:
    """Counts events per run and aggregates the one run being asked for, in one pass.

    ``None`` asks for the last run to start: whenever a run id is seen for the first
    time, it becomes the candidate and the previous candidate's aggregate is dropped
    (a run that started earlier can no longer be the last to start).
    """

    def __init__(self, run_id: str | None, top: int) -> None:
        self.wanted = run_id
        self.top = top
        self.runs: dict[str | None, int] = {}
        self.other_runs_events = 0
        self.events = 0
        self._exact: _RunAggregate | None = None
        self._exact_key: str | None = None
        self._prefix: _RunAggregate | None = None
        self._prefix_key: str | None = None
        self._ambiguous = False
        self._latest: _RunAggregate | None = None
        self._latest_key: str | None = None

    def add(
        self, line: int, run_id: str | None, core: _Core,
        obj: dict[str, Any] | TraceRecord,
    ) -> None:
        self.events += 1
        key = run_id if run_id is None or len(run_id) <= MAX_NAME_CHARS else _bounded(run_id)
        count = self.runs.get(key)
        if count is None:
            if len(self.runs) >= MAX_RUNS:
                self.other_runs_events += 1
                return
            count = 0
            if self.wanted is None:
                self._latest, self._latest_key = _RunAggregate(self.top), key
        self.runs[key] = count + 1
        target = self._target(run_id, key)
        if target is not None:
            target.add(line, core, obj)

    def _target(self, run_id: str | None, key: str | None) -> _RunAggregate | None:
        wanted = self.wanted
        if wanted is None:
            return self._latest if key == self._latest_key else None
        if wanted in ("", ANONYMOUS_RUN):
            if run_id is not None:
                return None
            if self._exact is None:
                self._exact = _RunAggregate(self.top)
            return self._exact
        if run_id is None:
            return None
        if run_id == wanted:
            if self._exact is None:
                self._exact, self._exact_key = _RunAggregate(self.top), key
            return self._exact
        if self._ambiguous or not run_id.startswith(wanted):
            return None
        if self._prefix is None:
            self._prefix, self._prefix_key = _RunAggregate(self.top), key
        elif key != self._prefix_key:
            self._ambiguous, self._prefix = True, None
            return None
        return self._prefix

    def chosen(self) -> tuple[str | None, _RunAggregate] | None:
        wanted = self.wanted
        if wanted is None:
            return None if self._latest is None else (self._latest_key, self._latest)
        if wanted in ("", ANONYMOUS_RUN):
            return None if self._exact is None else (None, self._exact)
        if self._exact is not None:
            return self._exact_key, self._exact
        if self._prefix is not None and not self._ambiguous:
            return self._prefix_key, self._prefix
        return None

    def summary(self, path: Path, malformed: int) -> TraceSummary | None:
        chosen = self.chosen()
        if chosen is None:
            return None
        run_id, agg = chosen
        span = agg.last_end - agg.first_start
        return TraceSummary(
            path=str(path),
            run_id=run_id,
            runs=list(self.runs.items()),
            malformed_lines=malformed,
            totals=agg.totals.row("all"),
            forward_calls=agg.forward_calls,
            tokens=agg.tokens,
            span_s=span if math.isfinite(agg.last_end) else None,
            by_probe=agg.by_probe.result(),
            by_view=sorted(agg.by_view.result(), key=lambda g: -g.total_ms),
            by_op=sorted(agg.by_op.result(), key=lambda g: -g.total_ms),
            slowest=agg.slowest(),
            other_runs_events=self.other_runs_events,
            folded={
                name: groups.folded
                for name, groups in (
                    ("probe", agg.by_probe), ("view", agg.by_view), ("op", agg.by_op)
                )
                if groups.folded
            },
            percentiles_exact=all(
                g.exact() for g in (agg.by_probe, agg.by_view, agg.by_op)
            ) and agg.totals.latency.exact,
        )

    def run_ids(self) -> list[str | None]:
        return list(self.runs)


def summarize(trace: TraceFile, run_id: str | None = None, top: int = 10) -> TraceSummary | None:
    """Summarize one run of ``trace`` (see :meth:`TraceFile.select`); ``None`` if it has no events.

    Probes are listed in the order they ran; views and ops by total time, largest first.
    """
    selector = _RunSelector(run_id, top)
    for r in trace.records:
        selector.add(r.line, r.run_id, (r.probe, r.view_id, r.op, r.hit, r.wall_ms), r)
    return selector.summary(trace.path, trace.malformed)


@dataclass(slots=True)
class TraceScan:
    """What one streaming pass over a trace file found."""

    summary: TraceSummary | None
    events: int
    run_ids: list[str | None]
    malformed: int
    malformed_line_numbers: list[int]
    """The first :data:`SHOWN_BAD_LINES` of them."""


def summarize_file(path: Path, run_id: str | None = None, top: int = 10) -> TraceScan:
    """Summarize one run of the trace at ``path`` in one streaming pass, in bounded memory.

    Same selection and result as ``summarize(read_trace(path), run_id, top)`` within
    the bounds in the module docstring. Raises ``OSError`` when the file cannot be read.
    """
    selector = _RunSelector(run_id, top)
    malformed = 0
    shown_bad: list[int] = []
    with Path(path).open("rb") as fh:
        for number, obj in _parsed_lines(fh):
            core = _core_fields(obj)
            if core is None:
                malformed += 1
                if len(shown_bad) < SHOWN_BAD_LINES:
                    shown_bad.append(number)
                continue
            line_run = obj.get("run_id")
            selector.add(number, line_run if type(line_run) is str else None, core, obj)
    return TraceScan(
        summary=selector.summary(Path(path), malformed),
        events=selector.events,
        run_ids=selector.run_ids(),
        malformed=malformed,
        malformed_line_numbers=shown_bad,
    )


# -- rendering ------------------------------------------------------------------------------------

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
        escape_control_chars(r.probe or _NO_PROBE),
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


__all__ = [
    "ANONYMOUS_RUN",
    "FORMATS",
    "MAX_GROUP_KEYS",
    "MAX_LINE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_RUNS",
    "OTHER",
    "RECENT_BATCHES",
    "GroupRow",
    "TraceFile",
    "TraceRecord",
    "TraceScan",
    "TraceSummary",
    "parse_line",
    "percentile",
    "read_trace",
    "render_json",
    "render_markdown",
    "render_terminal",
    "summarize",
    "summarize_command",
    "summarize_file",
]
