"""What every probe is: a pydantic spec, a ``run`` that returns a :class:`ProbeResult`.

A probe reads the model only through a :class:`~swayscope.backends.api.DifferentialBackend`,
so it runs the same on the dummy and the HF backend. A probe that supports
null-adapter calibration implements :meth:`Probe.statistic` for an arbitrary
"other" view; the ``null_adapter`` probe runs it under seeded null adapters and
later probes report a z-score of their real statistic against that spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from swayscope.backends.api import DifferentialBackend, ScoringView
from swayscope.instrumentation.vocabulary import DEFAULT_TOP_K, ProbeStatus
from swayscope.probes.sections import TrainingDocument

#: A probe's verdict is its status: one vocabulary for probes, events and results.
Verdict = ProbeStatus

#: Opens a view to compare against base: ``ft``, a scaled or a null view.
ViewFactory = Callable[[], AbstractContextManager[ScoringView]]


class ProbeSpec(BaseModel):
    """Fields every probe spec has; subclasses add their own and keep ``extra="forbid"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    name: str | None = None
    """Defaults to ``kind``; must be unique in a suite."""

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(slots=True)
class Calibration:
    """Mean and spread of a statistic under null adapters."""

    mean: float
    std: float
    samples: list[float]

    def z(self, value: float) -> float | None:
        if self.std <= 0 or not math.isfinite(self.std):
            return None
        return (value - self.mean) / self.std


@dataclass(slots=True)
class ProbeResult:
    name: str
    kind: str
    verdict: Verdict
    score: float | None = None
    """The probe's headline statistic (documented per probe)."""
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    z_score: float | None = None
    duration_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "verdict": self.verdict,
            "score": self.score,
            "message": self.message,
            "evidence": self.evidence,
            "z_score": self.z_score,
            "duration_s": self.duration_s,
            "error": self.error,
        }


@dataclass(slots=True)
class RunDefaults:
    """Suite-wide defaults a probe may use (seeded, so runs are repeatable)."""

    seed: int = 0
    top_k: int = DEFAULT_TOP_K


@dataclass(slots=True)
class ProbeContext:
    """Everything a probe may touch during ``run``."""

    backend: DifferentialBackend
    defaults: RunDefaults = field(default_factory=RunDefaults)
    calibration: dict[str, Calibration] = field(default_factory=dict)
    """Probe label → null-adapter calibration, filled by ``null_adapter``."""
    later_probes: list[tuple[ProbeSpec, Probe]] = field(default_factory=list)
    """Probes after the current one, for ``null_adapter`` to calibrate."""
    document: TrainingDocument | None = None
    """The suite's training document (``dlm_source``), for the probes that read it."""


def _number(value: object) -> float | None:
    """``value`` as a finite float (None: not a number, or not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def evidence_numbers(evidence: Mapping[str, Any], *keys: str) -> tuple[float, ...]:
    """The finite numbers under ``keys`` in ``evidence``, in that order (others left out)."""
    return tuple(v for v in (_number(evidence.get(k)) for k in keys) if v is not None)


class Probe:
    """Base class. Subclasses set ``kind`` and ``spec_class`` and implement ``run``."""

    kind: ClassVar[str]
    spec_class: ClassVar[type[ProbeSpec]]
    must_be_first: ClassVar[bool] = False
    """True for probes that prepare state for every later probe (``null_adapter``)."""
    score_label: ClassVar[str]
    """What the score is, in a few words (a plot's y axis), e.g. ``mean divergence``."""
    score_unit: ClassVar[str]
    """The score's unit, e.g. ``nats``, ``nats/token``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A kind without these fails where it is written, not in a sweep's plot hours later.
        super().__init_subclass__(**kwargs)
        lacking = [a for a in ("kind", "spec_class", "score_label", "score_unit")
                   if not hasattr(cls, a)]
        if lacking:
            raise TypeError(f"probe class {cls.__name__} must set {', '.join(lacking)}")

    @classmethod
    def score_thresholds(cls, evidence: Mapping[str, Any]) -> tuple[float, ...]:
        """The values the score was compared with for the verdict, read from a result's
        ``evidence`` (drawn on plots); none by default."""
        return ()

    @classmethod
    def score_ci(cls, evidence: Mapping[str, Any]) -> tuple[float, float] | None:
        """The score's confidence interval where the result has one (``ci_low``,
        ``ci_high`` in its ``evidence``, both finite)."""
        low, high = _number(evidence.get("ci_low")), _number(evidence.get("ci_high"))
        return None if low is None or high is None else (low, high)

    def __init__(self, spec: ProbeSpec) -> None:
        if not isinstance(spec, self.spec_class):
            # A generic ProbeSpec (or another kind's) is re-validated as this kind's spec.
            spec = self.spec_class.model_validate(spec.model_dump())
        self.spec = spec

    def run(self, ctx: ProbeContext) -> ProbeResult:
        raise NotImplementedError

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """The headline statistic of base vs ``other``; None when not calibratable."""
        return None

    def result(self, verdict: Verdict, **kw: Any) -> ProbeResult:
        return ProbeResult(name=self.spec.label, kind=self.kind, verdict=verdict, **kw)


__all__ = [
    "Calibration",
    "Probe",
    "ProbeContext",
    "ProbeResult",
    "ProbeSpec",
    "RunDefaults",
    "Verdict",
    "ViewFactory",
    "evidence_numbers",
]
