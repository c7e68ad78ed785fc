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

from swayscope.percentiles import percentile
from swayscope.trace_reader.records import (
    ANONYMOUS_RUN,
    FORMATS,
    MAX_LINE_BYTES,
    OTHER,
    TraceFile,
    TraceRecord,
    parse_line,
    read_trace,
)
from swayscope.trace_reader.render import (
    render_json,
    render_markdown,
    render_terminal,
    summarize_command,
)
from swayscope.trace_reader.summary import (
    MAX_GROUP_KEYS,
    MAX_NAME_CHARS,
    MAX_RUNS,
    RECENT_BATCHES,
    GroupRow,
    TraceScan,
    TraceSummary,
    summarize,
    summarize_file,
)

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

