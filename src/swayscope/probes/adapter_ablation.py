"""``adapter_ablation``: dose-response of the adapter, scaled by λ from 0 (base) past 1 (ft).

For each λ in the sweep the probe opens ``backend.scaled(λ)`` (weights
``base + λ·ΔW``) and measures the mean next-token divergence from base over the
prompts. λ = 0 *is* the base view and λ = 1 *is* the fine-tuned view (same view
ids, same cache entries), so after ``delta_kl`` on the same prompts those two
points cost no forward pass.

Why the fit is against λ², not λ: a LoRA update moves the logits linearly in λ,
and a smooth divergence (KL, JS) between two nearby distributions grows with
the *square* of the logit change (its second-order term, the Fisher metric).
A well-behaved adapter therefore gives ``div(λ) ≈ c·λ²``; ``linearity_r2`` is
the R² of an ordinary least-squares line of divergence on λ² (with intercept).
A low R² means the effect saturates, flips or is noisy. ``r2_vs_lambda`` (plain
λ) is reported too.

Evidence: ``divergence_by_lambda`` (mean over prompts, nats), ``linearity_r2``,
``saturation_lambda`` (smallest λ, linearly interpolated between sweep points,
at which the divergence reaches ``saturation_fraction`` = 90 % of the
divergence at λ = 1), ``overshoot`` (divergence at the largest λ / divergence
at λ = 1), ``monotone``.

**score**: mean divergence at λ = 1 (base vs the full adapter), in nats.

**verdict**: ``fail`` when the divergence at λ = 1 is ≈ 0 (≤ 1e-9 nats: the
adapter does nothing); ``warn`` when the curve is not monotone increasing (a
step down by more than ``monotone_tolerance`` x div(1)) or div(1) is below
``threshold``; ``pass`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.backends.api import scaled_view_id
from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    Verdict,
    evidence_numbers,
)
from swayscope.probes.defaults import DEFAULT_LAMBDAS, DEFAULT_PROMPTS, check_prompts
from swayscope.probes.delta_kl import DEFAULT_THRESHOLDS
from swayscope.probes.divergence import (
    ZERO_DIVERGENCE,
    DivergenceKind,
    FloatArray,
    divergences,
    finite,
    view_dists,
)

NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class AdapterAblationSpec(ProbeSpec):
    """Spec of ``adapter_ablation``; every field has a default."""

    kind: Literal["adapter_ablation"] = "adapter_ablation"
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    """Adapter scales to sweep: at least 3 distinct finite values ≥ 0, including 1 (sorted)."""
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    divergence: DivergenceKind = "js"
    threshold: NonNegFloat | None = None
    """Divergence at λ = 1 below which the verdict is at most ``warn``; default as delta_kl."""
    monotone_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Allowed step down between neighbouring λ, as a fraction of div(1)."""
    saturation_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_prompts(v)

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [x for x in v if not math.isfinite(x) or x < 0]
        if bad:
            raise ValueError(
                f"every λ must be a finite number ≥ 0; got {bad}. Example: {list(DEFAULT_LAMBDAS)}"
            )
        if len(set(v)) != len(v):
            dups = sorted({x for x in v if v.count(x) > 1})
            raise ValueError(f"λ values must be distinct; {dups} repeated")
        if len(v) < 3:
            raise ValueError(
                f"need at least 3 λ values to fit a curve; got {list(v)}. "
                f"Example: {list(DEFAULT_LAMBDAS)}"
            )
        if 1.0 not in v:
            raise ValueError(f"λ values must include 1 (the fine-tuned model); got {list(v)}")
        return tuple(sorted(v))

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.divergence]


def r_squared(x: FloatArray, y: FloatArray) -> float | None:
    """R² of the least-squares line ``y ≈ a + b·x``; None when y (or x) is constant."""
    if x.size < 2:
        return None
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    sx = float(np.sum((x - x.mean()) ** 2))
    if ss_tot <= 0.0 or sx <= 0.0:
        return None
    b = float(np.sum((x - x.mean()) * (y - y.mean()))) / sx
    a = float(y.mean()) - b * float(x.mean())
    ss_res = float(np.sum((y - (a + b * x)) ** 2))
    return 1.0 - ss_res / ss_tot


def saturation_lambda(lams: FloatArray, divs: FloatArray, target: float) -> float | None:
    """Smallest λ where the curve reaches ``target`` (linear interpolation); None if never."""
    for i, d in enumerate(divs):
        if d >= target:
            if i == 0:
                return float(lams[0])
            d0, l0, l1 = float(divs[i - 1]), float(lams[i - 1]), float(lams[i])
            return l0 + (target - d0) * (l1 - l0) / (float(d) - d0)
    return None


class AdapterAblationProbe(Probe):
    """Divergence from base as the adapter is scaled by λ."""

    kind: ClassVar[str] = "adapter_ablation"
    spec_class: ClassVar[type[ProbeSpec]] = AdapterAblationSpec
    score_label: ClassVar[str] = "divergence at λ = 1"
    score_unit: ClassVar[str] = "nats"
    spec: AdapterAblationSpec

    @classmethod
    def score_thresholds(cls, evidence: Mapping[str, Any]) -> tuple[float, ...]:
        return evidence_numbers(evidence, "threshold")

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        backend = ctx.backend
        top_k = ctx.defaults.top_k
        base = view_dists(backend.base, spec.prompts, top_k)
        means: list[float] = []
        for lam in spec.lambdas:
            if scaled_view_id(lam) == "base":
                means.append(0.0)  # λ = 0 is the base view itself
                continue
            other = view_dists(partial(backend.scaled, lam), spec.prompts, top_k)
            means.append(float(divergences(base, other, spec.divergence).mean()))
        lams = np.asarray(spec.lambdas, dtype=np.float64)
        divs = np.asarray(means, dtype=np.float64)
        d1 = float(divs[spec.lambdas.index(1.0)])
        threshold = spec.effective_threshold
        zero = d1 <= ZERO_DIVERGENCE
        steps = np.diff(divs)
        monotone = bool(np.all(steps >= -spec.monotone_tolerance * d1))
        r2 = r_squared(lams**2, divs)
        r2_lin = r_squared(lams, divs)
        sat = None if zero else saturation_lambda(lams, divs, spec.saturation_fraction * d1)
        overshoot = None if zero else float(divs[-1]) / d1
        verdict: Verdict
        if zero:
            verdict = "fail"
            message = f"divergence at λ=1 is {d1:.3g} nats: the adapter changes nothing"
        elif not monotone:
            verdict = "warn"
            worst = int(np.argmin(steps))
            message = (
                f"divergence is not monotone in λ: falls from {divs[worst]:.4g} at "
                f"λ={lams[worst]:g} to {divs[worst + 1]:.4g} at λ={lams[worst + 1]:g}"
            )
        elif d1 < threshold:
            verdict = "warn"
            message = f"monotone, but divergence at λ=1 {d1:.4g} < threshold {threshold:g}"
        else:
            verdict = "pass"
            message = f"monotone dose-response; divergence at λ=1 {d1:.4g} nats"
        if not zero:
            extras = []
            if r2 is not None:
                extras.append(f"R² vs λ² {r2:.3f}")
            if sat is not None:
                extras.append(f"saturation λ {sat:.3g}")
            if overshoot is not None:
                extras.append(f"overshoot {overshoot:.3g}")
            message += " (" + ", ".join(extras) + ")"
        return self.result(
            verdict,
            score=d1,
            message=message,
            evidence={
                "divergence": spec.divergence,
                "unit": "nats",
                "lambdas": [float(x) for x in lams],
                "divergence_by_lambda": [float(x) for x in divs],
                "divergence_at_1": d1,
                "linearity_r2": finite(r2),
                "linearity_fit": "divergence ~ a + b*lambda^2",
                "r2_vs_lambda": finite(r2_lin),
                "saturation_fraction": spec.saturation_fraction,
                "saturation_lambda": finite(sat),
                "overshoot": finite(overshoot),
                "monotone": monotone,
                "monotone_tolerance": spec.monotone_tolerance,
                "threshold": threshold,
                "n_prompts": len(spec.prompts),
                "top_k": top_k,
            },
        )


__all__ = ["AdapterAblationProbe", "AdapterAblationSpec", "r_squared", "saturation_lambda"]
