"""One run of a trace, summarized in one streaming pass and bounded memory."""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swayscope.percentiles import PercentileSketch
from swayscope.trace_reader.records import (
    ANONYMOUS_RUN,
    NO_PROBE,
    OTHER,
    SHOWN_BAD_LINES,
    CoreFields,
    TraceFile,
    TraceRecord,
    core_fields,
    opt_float,
    opt_int,
    opt_str,
    parsed_lines,
    to_record,
)

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
        self, line: int, core: CoreFields,
        obj: dict[str, Any] | TraceRecord,
    ) -> None:
        probe, view_id, op, hit, wall_ms = core
        if isinstance(obj, TraceRecord):
            ts, start_ts, error = obj.ts, obj.start_ts, obj.error
            batch_id, n_tokens = obj.batch_id, obj.n_tokens
        else:
            ts, start_ts = opt_float(obj.get("ts")), opt_float(obj.get("start_ts"))
            error = opt_str(obj.get("error"))
            batch_id, n_tokens = opt_str(obj.get("batch_id")), opt_int(obj.get("n_tokens"))
        failed = bool(error)
        self.totals.add(hit, wall_ms, failed)
        self.by_probe.get(probe if probe is not None else NO_PROBE).add(hit, wall_ms, failed)
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
        core: CoreFields,
    ) -> None:
        # Slowest first; of equal times, the earlier line (a min-heap on (wall, -line)).
        key = (wall_ms, -line)
        if len(self._slowest) >= self.top and key <= self._slowest[0][:2]:
            return
        record = obj if isinstance(obj, TraceRecord) else _shortened(to_record(obj, line, core))
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
        self, line: int, run_id: str | None, core: CoreFields,
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
        for number, obj in parsed_lines(fh):
            core = core_fields(obj)
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

