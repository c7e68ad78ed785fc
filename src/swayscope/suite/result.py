"""SuiteResult: what a run produced, written as JSON (atomically) and rendered as reports."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swayscope.exit_codes import EXIT_ERROR, EXIT_PASS, EXIT_PROBE_FAILED
from swayscope.probes.base import ProbeResult
from swayscope.suite.outputs import write_text_atomic

RESULT_SCHEMA = 1


@dataclass(slots=True)
class SuiteResult:
    run_id: str
    suite: str
    status: str = "complete"
    """complete | interrupted | error"""
    probes: list[ProbeResult] = field(default_factory=list)
    backend_stats: dict[str, float | int] = field(default_factory=dict)
    """This run's counters (BackendStats since the run started)."""
    cache_by_probe: dict[str, dict[str, Any]] = field(default_factory=dict)
    """probe → cache_hits, cache_misses, lookups, hit_rate, forward_calls of this run."""
    telemetry: dict[str, Any] = field(default_factory=dict)
    """Where telemetry went (trace_file, trace_id, metrics_url, otlp_endpoint, pushgateway)
    and what this run lost of it (exporter_errors, spans_dropped), final flush included."""
    models: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    wall_s: float = 0.0
    threads: int | None = None
    """CPU threads the backend computed with (None: the backend does not say)."""
    threads_reason: str | None = None
    """How that count was chosen: ``set``, ``OMP_NUM_THREADS``, or the CPUs and their load."""
    error: str | None = None
    not_run: list[str] = field(default_factory=list)
    resumed_from: str | None = None
    """The run this one resumed: the same work, started and never finished."""
    disk_cache: dict[str, Any] = field(default_factory=dict)
    """The durable tier: its folder, this run's hits from it, the file's entries and bytes
    (empty when the disk cache is off)."""
    notes: list[str] = field(default_factory=list)
    """How the suite was read, where it came from another tool's format (``file:line``:
    what was ignored or approximated)."""

    @property
    def exit_code(self) -> int:
        """0 every probe passed (warn and skip included), 1 a probe failed, 2 run error."""
        if self.status != "complete":
            return EXIT_ERROR
        if any(p.verdict in ("fail", "error") for p in self.probes):
            return EXIT_PROBE_FAILED
        return EXIT_PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "run_id": self.run_id,
            "suite": self.suite,
            "status": self.status,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "wall_s": self.wall_s,
            "threads": self.threads,
            "threads_reason": self.threads_reason,
            "error": self.error,
            "models": self.models,
            "probes": [p.to_dict() for p in self.probes],
            "not_run": self.not_run,
            "notes": self.notes,
            "backend_stats": self.backend_stats,
            "cache_by_probe": self.cache_by_probe,
            "telemetry": self.telemetry,
            "resumed_from": self.resumed_from,
            "disk_cache": self.disk_cache,
        }

    def to_json(self) -> str:
        """Strict JSON (a non-finite number becomes null: NaN is not JSON)."""
        return json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def write_json(self, path: Path) -> None:
        """Write atomically: a reader never sees a half-written file, even after Ctrl-C."""
        write_text_atomic(path, self.to_json())


def json_safe(value: Any) -> Any:
    """``value`` with only JSON's types: paths and arrays converted, non-finite floats null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    return repr(value)


__all__ = [
    "EXIT_ERROR",
    "EXIT_PASS",
    "EXIT_PROBE_FAILED",
    "RESULT_SCHEMA",
    "SuiteResult",
    "json_safe",
]
