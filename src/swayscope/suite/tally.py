"""Per-probe cache counts of one run, from the core's events, for the run's result.

The Prometheus metrics count lookups by op and view kind only (their series must
not grow with the suite); a probe's own hit ratio is kept here, for the result
JSON, and in each probe's trace. A tally counts one run's lookups: the run its
``run_id`` names, else the first whose start it sees (a sweep's adapters may run at
once in one instrumentation).
"""

from __future__ import annotations

import threading
from typing import Any

from swayscope.instrumentation.events import CacheLookup, Event, ForwardCall, RunStarted
from swayscope.instrumentation.exporter import Exporter

#: Key of lookups made outside any probe.
OUTSIDE_PROBES = "(outside probes)"


class ProbeTally(Exporter):
    """Counts cache hits, misses and forward calls per probe while it is attached."""

    name = "probe-tally"

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        # probe -> [hits, misses, forward calls]
        self._counts: dict[str, list[int]] = {}

    def _row(self, probe: str | None) -> list[int]:
        key = probe if probe is not None else OUTSIDE_PROBES
        row = self._counts.get(key)
        if row is None:
            row = self._counts[key] = [0, 0, 0]
        return row

    def export(self, event: Event) -> None:
        kind = type(event)
        if kind is RunStarted and self.run_id is None:
            self.run_id = event.run_id  # type: ignore[union-attr]
        if getattr(event, "run_id", None) != self.run_id:
            return
        if kind is CacheLookup:
            with self._lock:
                self._row(event.probe)[0 if event.hit else 1] += 1  # type: ignore[union-attr]
        elif kind is ForwardCall:
            with self._lock:
                self._row(event.probe)[2] += 1  # type: ignore[union-attr]

    def by_probe(self) -> dict[str, dict[str, Any]]:
        """probe → hits, misses, lookups, hit_rate (None without lookups), forward_calls."""
        with self._lock:
            rows = {probe: list(row) for probe, row in self._counts.items()}
        out: dict[str, dict[str, Any]] = {}
        for probe, (hits, misses, calls) in rows.items():
            lookups = hits + misses
            out[probe] = {
                "cache_hits": hits,
                "cache_misses": misses,
                "lookups": lookups,
                "hit_rate": hits / lookups if lookups else None,
                "forward_calls": calls,
            }
        return out


__all__ = ["OUTSIDE_PROBES", "ProbeTally"]
