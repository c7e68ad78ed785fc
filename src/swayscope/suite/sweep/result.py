"""What a sweep produced: one outcome per adapter, and per probe its score by checkpoint.

The summary JSON (:meth:`SweepResult.to_json`) lists the adapters in checkpoint order,
each with its status (``complete``, ``interrupted``, ``error`` when it could not be
loaded, ``not_run`` after Ctrl-C), its own counters and result file, and per probe the
points of its curve: score, verdict and z-score at each checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from swayscope.exit_codes import EXIT_ERROR, EXIT_PASS
from swayscope.probes.registry import PROBE_KINDS
from swayscope.suite.outputs import write_text_atomic
from swayscope.suite.result import SuiteResult, json_safe
from swayscope.suite.sweep.adapters import Order, SweepAdapter

SWEEP_SCHEMA = 1

#: How an adapter's turn in the sweep ended.
AdapterStatus = Literal["complete", "interrupted", "error", "not_run"]


@dataclass(slots=True)
class AdapterOutcome:
    """One adapter's row: its suite result, or why it has none."""

    adapter: SweepAdapter
    status: AdapterStatus
    result: SuiteResult | None = None
    error: str | None = None
    """Why the adapter could not be loaded (``error``), or its result not written."""
    load_s: float = 0.0
    """Seconds spent attaching the adapter (the first one: loading the base model too)."""
    result_file: Path | None = None

    @property
    def stats(self) -> dict[str, float | int]:
        """This adapter's own counters (lookups, hits, forward calls, base-view prompts)."""
        return self.result.backend_stats if self.result is not None else {}

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "label": self.adapter.label,
            "path": str(self.adapter.path),
            "step": self.adapter.step,
            "status": self.status,
            "error": self.error,
            "exit_code": r.exit_code if r is not None else None,
            "run_id": r.run_id if r is not None else None,
            "trace_id": r.telemetry.get("trace_id") if r is not None else None,
            "load_s": self.load_s,
            "wall_s": r.wall_s if r is not None else None,
            "result_file": str(self.result_file) if self.result_file else None,
            "backend_stats": self.stats,
        }


@dataclass(frozen=True, slots=True)
class Point:
    """One probe at one checkpoint (score None: no score, or no result)."""

    label: str
    step: int | None
    verdict: str
    score: float | None
    z_score: float | None
    thresholds: tuple[float, ...] = ()
    """What the score was compared with for the verdict (the probe kind's
    :meth:`~swayscope.probes.base.Probe.score_thresholds`)."""
    ci: tuple[float, float] | None = None
    """The score's confidence interval, where the probe has one."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(slots=True)
class SweepResult:
    sweep_id: str
    suite: str
    base_model: str
    order: Order
    adapters: list[AdapterOutcome] = field(default_factory=list)
    """One row per adapter, in checkpoint order."""
    status: str = "complete"
    """complete | interrupted"""
    started_at: float = 0.0
    wall_s: float = 0.0
    backend_stats: dict[str, float | int] = field(default_factory=dict)
    """The whole sweep's counters (one cache, so base-view prompts are computed once)."""
    telemetry: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Outputs that could not be written."""

    @property
    def exit_code(self) -> int:
        """2 when interrupted, an adapter did not load or an output was not written;
        else the worst of the adapters' (1: a probe failed somewhere, 0: all passed)."""
        if self.status != "complete" or self.errors:
            return EXIT_ERROR
        if any(o.status != "complete" or o.result is None for o in self.adapters):
            return EXIT_ERROR
        return max((o.result.exit_code for o in self.adapters if o.result), default=EXIT_PASS)

    def probe_names(self) -> list[str]:
        """Every probe that ran on some adapter, in suite order."""
        names: list[str] = []
        for outcome in self.adapters:
            if outcome.result is not None:
                names.extend(p.name for p in outcome.result.probes if p.name not in names)
        return names

    def points(self, probe: str) -> list[Point]:
        """The probe's curve: one point per adapter, in checkpoint order."""
        out = []
        for outcome in self.adapters:
            found = None
            if outcome.result is not None:
                found = next((p for p in outcome.result.probes if p.name == probe), None)
            if found is None:
                out.append(Point(outcome.adapter.label, outcome.adapter.step, outcome.status,
                                 None, None))
                continue
            cls = PROBE_KINDS.get(found.kind)
            out.append(
                Point(
                    label=outcome.adapter.label,
                    step=outcome.adapter.step,
                    verdict=found.verdict,
                    score=_finite(found.score),
                    z_score=_finite(found.z_score),
                    thresholds=cls.score_thresholds(found.evidence) if cls else (),
                    ci=cls.score_ci(found.evidence) if cls else None,
                )
            )
        return out

    def kind_of(self, probe: str) -> str:
        for outcome in self.adapters:
            if outcome.result is not None:
                for p in outcome.result.probes:
                    if p.name == probe:
                        return p.kind
        return probe

    def score_label(self, probe: str) -> str:
        """What the probe's score is, with its unit: ``mean divergence (nats)``, by its
        kind (``score``: a kind swayscope does not know, such as a skipped dlm-sway one)."""
        cls = PROBE_KINDS.get(self.kind_of(probe))
        return f"{cls.score_label} ({cls.score_unit})" if cls is not None else "score"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SWEEP_SCHEMA,
            "sweep_id": self.sweep_id,
            "suite": self.suite,
            "base_model": self.base_model,
            "status": self.status,
            "exit_code": self.exit_code,
            "order": self.order,
            "started_at": self.started_at,
            "wall_s": self.wall_s,
            "adapters": [o.to_dict() for o in self.adapters],
            "probes": [
                {
                    "name": name,
                    "kind": self.kind_of(name),
                    "points": [
                        {
                            "adapter": p.label,
                            "step": p.step,
                            "verdict": p.verdict,
                            "score": p.score,
                            "z_score": p.z_score,
                        }
                        for p in self.points(name)
                    ],
                }
                for name in self.probe_names()
            ],
            "backend_stats": self.backend_stats,
            "telemetry": self.telemetry,
            "errors": self.errors,
        }

    def to_json(self) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def write_json(self, path: Path) -> None:
        write_text_atomic(path, self.to_json())


__all__ = ["SWEEP_SCHEMA", "AdapterOutcome", "AdapterStatus", "Point", "SweepResult"]
