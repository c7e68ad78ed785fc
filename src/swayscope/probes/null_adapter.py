"""``null_adapter``: calibrate later probes against seeded random ("null") adapters.

A null adapter has the shape and size of the real one but random weights: it
changes the model without teaching it anything. For every probe after this one
whose :meth:`~swayscope.probes.base.Probe.statistic` is not None, this probe
computes that statistic under ``n`` null adapters (seeds ``seed``, ``seed + 1``,
…) and stores their mean and sample standard deviation in
``ctx.calibration[label]``; the later probe then reports
``z = (real - null mean) / null std``.

It must be the first probe of a suite (``must_be_first``): it calibrates only
the probes that come after it.

**score**: the number of later probes calibrated.

**verdict**: ``pass`` when at least one later probe was calibrated and none
raised; ``warn`` when some were calibrated and some raised, or when every
calibrated statistic has zero spread (the null adapters all change nothing,
as for an adapter whose ``lora_B`` is zero: there is no noise floor and no
z-score); ``error`` when every calibratable probe raised; ``skip`` when no
later probe has a calibratable statistic (or there is no later probe).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from swayscope.backends.api import MAX_SEED, ScoringView
from swayscope.probes.base import (
    Calibration,
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    Verdict,
    ViewFactory,
)
from swayscope.probes.divergence import finite

PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class NullAdapterSpec(ProbeSpec):
    """Spec of ``null_adapter``; every field has a default."""

    kind: Literal["null_adapter"] = "null_adapter"
    n: Annotated[int, Field(ge=2, le=64)] = 3
    """Null adapters per statistic (at least 2: a spread needs two samples)."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    """First null-adapter seed (then seed+1, …); defaults to the suite's ``defaults.seed``."""
    init_scale: PositiveFloat = 1.0
    """Scale of the null adapter's random init relative to the real adapter's."""
    rank_scale: PositiveFloat = 1.0
    """Rank of the null adapter relative to the real adapter's."""

    @model_validator(mode="after")
    def _seeds_in_range(self) -> NullAdapterSpec:
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            raise ValueError(
                f"seeds {self.seed}..{self.seed + self.n - 1} go past {MAX_SEED}; "
                f"give seed <= {MAX_SEED - self.n + 1}"
            )
        return self


class NullAdapterProbe(Probe):
    """Runs later probes' statistics under seeded null adapters; fills ``ctx.calibration``."""

    kind: ClassVar[str] = "null_adapter"
    spec_class: ClassVar[type[ProbeSpec]] = NullAdapterSpec
    score_label: ClassVar[str] = "probes calibrated"
    score_unit: ClassVar[str] = "count"
    #: The runner rejects a suite where this probe is not first.
    must_be_first: ClassVar[bool] = True
    spec: NullAdapterSpec

    def seeds(self, ctx: ProbeContext) -> list[int]:
        first = self.spec.seed if self.spec.seed is not None else ctx.defaults.seed
        return [first + i for i in range(self.spec.n)]

    def _factory(self, ctx: ProbeContext, seed: int) -> ViewFactory:
        backend = ctx.backend
        init_scale, rank_scale = self.spec.init_scale, self.spec.rank_scale

        def open_null() -> AbstractContextManager[ScoringView]:
            return backend.null(seed, init_scale=init_scale, rank_scale=rank_scale)

        return open_null

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        seeds = self.seeds(ctx)
        calibrated: dict[str, dict[str, object]] = {}
        not_calibratable: list[str] = []
        errors: dict[str, str] = {}
        for later_spec, probe in ctx.later_probes:
            label = later_spec.label
            samples: list[float] = []
            try:
                for seed in seeds:
                    value = probe.statistic(ctx, self._factory(ctx, seed))
                    if value is None:
                        break
                    samples.append(float(value))
            except Exception as exc:
                errors[label] = f"{type(exc).__name__}: {exc}"
                continue
            if len(samples) < len(seeds):
                not_calibratable.append(label)
                continue
            arr = np.asarray(samples, dtype=np.float64)
            cal = Calibration(mean=float(arr.mean()), std=float(arr.std(ddof=1)), samples=samples)
            ctx.calibration[label] = cal
            calibrated[label] = {
                "kind": later_spec.kind,
                "mean": finite(cal.mean),
                "std": finite(cal.std),
                "samples": samples,
            }
        evidence: dict[str, object] = {
            "n": spec.n,
            "seeds": seeds,
            "init_scale": spec.init_scale,
            "rank_scale": spec.rank_scale,
            "calibrated": calibrated,
            "not_calibratable": not_calibratable,
            "errors": errors,
        }
        verdict: Verdict
        if not ctx.later_probes:
            verdict, message = "skip", "no later probe to calibrate"
        elif calibrated and not errors and all(
            ctx.calibration[label].std == 0.0 for label in calibrated
        ):
            verdict = "warn"
            message = (
                f"{spec.n} null adapters of this adapter's size change nothing (zero spread "
                f"for {', '.join(calibrated)}): no noise floor, no z-scores"
            )
        elif calibrated and not errors:
            verdict = "pass"
            message = (
                f"calibrated {len(calibrated)} probe(s) with {spec.n} null adapters "
                f"(seeds {seeds[0]}..{seeds[-1]}): {', '.join(calibrated)}"
            )
        elif calibrated:
            verdict = "warn"
            message = (
                f"calibrated {', '.join(calibrated)}; statistic raised for {', '.join(errors)}"
            )
        elif errors:
            verdict = "error"
            message = f"statistic raised for every calibratable probe: {', '.join(errors)}"
        else:
            verdict, message = "skip", "no later probe has a calibratable statistic"
        return self.result(
            verdict,
            score=float(len(calibrated)),
            message=message,
            evidence=evidence,
            error="; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
        )


__all__ = ["NullAdapterProbe", "NullAdapterSpec"]
