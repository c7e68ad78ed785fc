"""``delta_kl``: how far the fine-tune moved the next-token distribution, on average.

For each prompt, the divergence (JS by default, or KL(base‖ft)) between the
base and the fine-tuned next-token distributions; the probe reports their mean
with a seeded percentile-bootstrap 95 % confidence interval over prompts.

**score**: mean divergence over the prompts, in nats (JS is in [0, ln 2]).

**verdict**: ``pass`` when the mean divergence is at least ``threshold`` (and
above zero, 1e-9 nats, even with ``threshold: 0``) and,
when a ``null_adapter`` probe calibrated this probe and its spread is non-zero,
the z-score against the null adapters is at least ``min_z``; ``fail`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    ViewFactory,
    evidence_numbers,
)
from swayscope.probes.defaults import DEFAULT_PROMPTS, check_prompts
from swayscope.probes.divergence import (
    ZERO_DIVERGENCE,
    DivergenceKind,
    FloatArray,
    bootstrap_ci,
    divergences,
    finite,
    view_dists,
)

#: Default pass threshold per divergence, in nats. KL of two nearby
#: distributions is about 4x their JS, hence the two values.
DEFAULT_THRESHOLDS: dict[str, float] = {"js": 0.005, "kl": 0.02}

NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class DeltaKLSpec(ProbeSpec):
    """Spec of ``delta_kl``; every field has a default."""

    kind: Literal["delta_kl"] = "delta_kl"
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    """Prompts whose next-token distributions are compared (batched, one call per view)."""
    divergence: DivergenceKind = "js"
    """``js`` (symmetric, bounded by ln 2) or ``kl`` (KL(base‖ft))."""
    threshold: NonNegFloat | None = None
    """Minimum mean divergence (nats) to pass; default 0.005 for JS, 0.02 for KL."""
    min_z: NonNegFloat = 3.0
    """Minimum z-score against the null-adapter calibration (used only when calibrated)."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000
    """Bootstrap resamples for the confidence interval (0: no interval, just the mean)."""
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_prompts(v)

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.divergence]


class DeltaKLProbe(Probe):
    """Mean base-vs-ft next-token divergence over prompts, with a bootstrap CI."""

    kind: ClassVar[str] = "delta_kl"
    spec_class: ClassVar[type[ProbeSpec]] = DeltaKLSpec
    score_label: ClassVar[str] = "mean divergence"
    score_unit: ClassVar[str] = "nats"
    spec: DeltaKLSpec

    @classmethod
    def score_thresholds(cls, evidence: Mapping[str, Any]) -> tuple[float, ...]:
        return evidence_numbers(evidence, "threshold")

    def _per_prompt(self, ctx: ProbeContext, other: ViewFactory) -> FloatArray:
        top_k = ctx.defaults.top_k
        base = view_dists(ctx.backend.base, self.spec.prompts, top_k)
        oth = view_dists(other, self.spec.prompts, top_k)
        return divergences(base, oth, self.spec.divergence)

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """Mean divergence of base vs ``other`` over the prompts (the score, for calibration)."""
        return float(self._per_prompt(ctx, other).mean())

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        per = self._per_prompt(ctx, ctx.backend.ft)
        mean = float(per.mean())
        lo, hi = bootstrap_ci(
            per, n_boot=spec.n_boot, confidence=spec.confidence, seed=ctx.defaults.seed
        )
        threshold = spec.effective_threshold
        cal = ctx.calibration.get(spec.label)
        z = cal.z(mean) if cal is not None else None
        above = mean >= threshold and mean > ZERO_DIVERGENCE
        z_ok = z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if above and z_ok else "fail"
        top = int(np.argmax(per))
        evidence: dict[str, object] = {
            "divergence": spec.divergence,
            "unit": "nats",
            "mean": mean,
            "ci_low": lo,
            "ci_high": hi,
            "confidence": spec.confidence,
            "n_boot": spec.n_boot,
            "median": float(np.median(per)),
            "min": float(per.min()),
            "max": float(per.max()),
            "n_prompts": len(spec.prompts),
            "per_prompt": [float(v) for v in per],
            "max_prompt_hash": ctx.backend.inst.hash_prompt(spec.prompts[top]),
            "max_prompt_index": top,
            "threshold": threshold,
            "min_z": spec.min_z,
            "top_k": ctx.defaults.top_k,
            "calibrated": cal is not None,
        }
        if cal is not None:
            evidence["null_mean"] = finite(cal.mean)
            evidence["null_std"] = finite(cal.std)
            evidence["null_samples"] = [float(s) for s in cal.samples]
        parts = [
            f"mean {spec.divergence.upper()} {mean:.4g} nats "
            f"(95% CI {lo:.4g}..{hi:.4g}) over {len(spec.prompts)} prompts",
            f"{'≥' if above else '<'} threshold {threshold:g}",
        ]
        if z is not None:
            parts.append(f"z = {z:.3g} vs null adapters ({'≥' if z_ok else '<'} {spec.min_z:g})")
        elif cal is not None:
            parts.append("null spread is zero: z-score undefined, threshold only")
        return self.result(
            verdict,
            score=mean,
            z_score=finite(z),
            message="; ".join(parts),
            evidence=evidence,
        )


__all__ = ["DEFAULT_THRESHOLDS", "DeltaKLProbe", "DeltaKLSpec"]
