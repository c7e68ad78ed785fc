"""Trace lines: read, parsed and checked one at a time (bad lines skipped and counted)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: How an anonymous (v0-format, no ``run_id``) run is shown and selected.
ANONYMOUS_RUN = "(no run_id)"

FORMATS = ("terminal", "md", "json")

#: Longest line read (a line with a captured 20k-token prompt is well under 1 MiB);
#: a longer one is skipped in chunks, never held whole, and counted as malformed.
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Line numbers of malformed lines kept to show.
SHOWN_BAD_LINES = 5
#: Run ids listed in a "no such run" message.
SHOWN_RUNS = 20

#: The row of lookups whose probe, view or op name is past :data:`MAX_GROUP_KEYS`.
OTHER = "(other)"
NO_PROBE = "(none)"
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


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def opt_float(value: Any) -> float | None:
    """A finite number as a float; anything else (an integer too large for a float too)
    as None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


CoreFields = tuple[str | None, str, str, bool, float]
"""``(probe, view_id, op, hit, wall_ms)``: the v0 core fields of a valid line."""


def core_fields(obj: Any) -> CoreFields | None:
    """``(probe, view_id, op, hit, wall_ms)`` of a parsed line, or ``None`` if it lacks them.

    Required (the v0 core): ``view_id`` and ``op`` strings, ``hit`` a bool,
    ``wall_ms`` a finite number, ``probe`` a string or null when present.
    """
    if type(obj) is not dict:
        return None
    view_id, op, hit, probe = obj.get("view_id"), obj.get("op"), obj.get("hit"), obj.get("probe")
    wall_ms = opt_float(obj.get("wall_ms"))
    if (
        type(view_id) is not str
        or type(op) is not str
        or type(hit) is not bool
        or wall_ms is None
        or (probe is not None and type(probe) is not str)
    ):
        return None
    return probe, view_id, op, hit, wall_ms


def to_record(obj: dict[str, Any], line: int, core: CoreFields) -> TraceRecord:
    probe, view_id, op, hit, wall_ms = core
    return TraceRecord(
        line=line,
        run_id=opt_str(obj.get("run_id")),
        probe=probe,
        view_id=view_id,
        op=op,
        prompt_hash=opt_str(obj.get("prompt_hash")) or "",
        top_k=opt_int(obj.get("top_k")),
        hit=hit,
        wall_ms=wall_ms,
        ts=opt_float(obj.get("ts")),
        start_ts=opt_float(obj.get("start_ts")),
        batch_id=opt_str(obj.get("batch_id")),
        batch_size=opt_int(obj.get("batch_size")),
        n_tokens=opt_int(obj.get("n_tokens")),
        error=opt_str(obj.get("error")),
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
    core = core_fields(obj)
    return None if core is None else to_record(obj, line, core)


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


def parsed_lines(fh: IO[bytes]) -> Iterator[tuple[int, Any]]:
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
        for number, obj in parsed_lines(fh):
            core = core_fields(obj)
            if core is None:
                bad.append(number)
            else:
                records.append(to_record(obj, number, core))
    return TraceFile(path=path, records=records, malformed=len(bad), malformed_line_numbers=bad)


# -- aggregating ----------------------------------------------------------------------------------


