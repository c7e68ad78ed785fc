"""``calibration_drift``: did fitting the document break the model's general knowledge?

Scores general-knowledge items — a prompt and its one correct completion — under base
and under ft with ``logprob_of`` (one batched call per view): the packaged set
(``swayscope/data/general_knowledge.tsv``, 176 facts; ``items_limit`` keeps the first
N) or the spec's ``items``. Per item, the drift in nats per token is

    Δ = (log p_ft(completion | prompt) - log p_base(completion | prompt)) / T(completion)

with T = characters / 4 (dlm-sway's token estimate, so its thresholds mean the same).
An item **regressed** when Δ < -``regression_nats``: the fine-tune finds the right
answer far less likely than the base model did.

**score**: the fraction of items that regressed.

**verdict**: ``pass`` when that fraction is below ``assert_fraction_regressed_lt`` and
the mean Δ is at least ``assert_mean_delta_gte``; ``fail`` otherwise. Calibrated by a
``null_adapter`` probe, the statistic is the mean Δ and the z-score is signed so that
positive means "drifts less than a random adapter of its size"; it is required to be
at least ``min_z`` only when ``min_z`` is set (a healthy adapter and a random one may
both leave general knowledge alone: that is no failure).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, ViewFactory
from swayscope.probes.divergence import FloatArray, bootstrap_ci, finite
from swayscope.probes.measures import completion_logprobs, null_evidence, z_against, z_words

#: The packaged item set, under ``swayscope/data``.
ITEMS_RESOURCE = "general_knowledge.tsv"
#: The worst items the evidence lists.
WORST_SHOWN = 5


@cache
def packaged_items() -> tuple[tuple[str, str], ...]:
    """The packaged general-knowledge items: (prompt, completion) pairs."""
    text = resources.files("swayscope").joinpath("data", ITEMS_RESOURCE).read_text("utf-8")
    items = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            prompt, completion = line.split("\t")
            items.append((prompt, completion))
    return tuple(items)


class CalibrationDriftSpec(ProbeSpec):
    """Spec of ``calibration_drift``; every field has a default."""

    kind: Literal["calibration_drift"] = "calibration_drift"
    pack: Literal["builtin"] = "builtin"
    """Where the items come from when ``items`` is empty: the packaged set."""
    items: tuple[tuple[str, str], ...] = ()
    """(prompt, completion) pairs to score instead of the packaged set."""
    items_limit: Annotated[int, Field(ge=1)] | None = None
    """Score only the first N items."""
    regression_nats: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1.0
    """How many nats per token worse an item must get to count as regressed."""
    assert_fraction_regressed_lt: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15
    assert_mean_delta_gte: Annotated[float, Field(allow_inf_nan=False)] = -0.5
    """The lowest mean Δ (nats per token) that passes."""
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = None
    """When set and calibrated, also require the z-score (positive: less drift than a
    random adapter) to be at least this."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000

    @field_validator("items")
    @classmethod
    def _items(cls, v: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for i, (prompt, completion) in enumerate(v):
            if not prompt.strip() or not completion.strip():
                raise ValueError(
                    f"items[{i}] needs a non-blank prompt and completion; got "
                    f"{[prompt, completion]!r}"
                )
        return v

    def chosen_items(self) -> tuple[tuple[str, str], ...]:
        items = self.items or packaged_items()
        return items[: self.items_limit] if self.items_limit is not None else items


class CalibrationDriftProbe(Probe):
    """Per-item log-probability drift on general knowledge, base → ft."""

    kind: ClassVar[str] = "calibration_drift"
    spec_class: ClassVar[type[ProbeSpec]] = CalibrationDriftSpec
    spec: CalibrationDriftSpec
    score_label: ClassVar[str] = "items regressed"
    score_unit: ClassVar[str] = "fraction"

    def _deltas(self, ctx: ProbeContext, other: ViewFactory) -> FloatArray:
        items = self.spec.chosen_items()
        base = completion_logprobs(ctx.backend.base, items)
        return completion_logprobs(other, items) - base

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """Mean Δ (nats per token) of base → ``other``."""
        return float(self._deltas(ctx, other).mean())

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        items = spec.chosen_items()
        deltas = self._deltas(ctx, ctx.backend.ft)
        regressed = deltas < -spec.regression_nats
        fraction = float(regressed.mean())
        mean = float(deltas.mean())
        lo, hi = bootstrap_ci(deltas, n_boot=spec.n_boot, seed=ctx.defaults.seed)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, mean)
        few = fraction < spec.assert_fraction_regressed_lt
        mild = mean >= spec.assert_mean_delta_gte
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if few and mild and z_ok else "fail"
        worst = [int(i) for i in np.argsort(deltas, kind="stable")[:WORST_SHOWN]]
        parts = [
            f"{int(regressed.sum())}/{len(items)} general-knowledge items regressed by more "
            f"than {spec.regression_nats:g} nats/token ({fraction:.1%} "
            f"{'<' if few else '≥'} {spec.assert_fraction_regressed_lt:.0%})",
            f"mean drift {mean:+.3f} nats/token (95% CI {lo:+.3f}..{hi:+.3f}; "
            f"{'≥' if mild else '<'} {spec.assert_mean_delta_gte:g})",
        ]
        said = z_words(z, cal, spec.min_z)
        if said:
            parts.append(said)
        return self.result(
            verdict,
            score=fraction,
            z_score=finite(z),
            message="; ".join(parts),
            evidence={
                "unit": "nats/token (characters / 4)",
                "fraction_regressed": fraction,
                "regressed_count": int(regressed.sum()),
                "total_items": len(items),
                "mean_delta_nats": mean,
                "ci_low": lo,
                "ci_high": hi,
                "per_item_delta": [float(d) for d in deltas],
                "worst_items": [
                    {
                        "index": i,
                        "prompt_hash": ctx.backend.inst.hash_prompt(items[i][0]),
                        "delta": float(deltas[i]),
                    }
                    for i in worst
                ],
                "source": "spec items" if spec.items else ITEMS_RESOURCE,
                "regression_nats": spec.regression_nats,
                "assert_fraction_regressed_lt": spec.assert_fraction_regressed_lt,
                "assert_mean_delta_gte": spec.assert_mean_delta_gte,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = ["ITEMS_RESOURCE", "CalibrationDriftProbe", "CalibrationDriftSpec", "packaged_items"]
