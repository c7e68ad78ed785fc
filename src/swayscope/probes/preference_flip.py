"""``preference_flip``: did preference training (DPO, ORPO) flip the ranking it was shown?

Each triple is a prompt, the chosen answer and the rejected one, from the spec's
``triples`` or, when it has none, from the preference sections of the training document
(``dlm_source``). The **margin** of a triple under a view is
``log p(chosen | prompt) - log p(rejected | prompt)`` (whole answers, in nats); every
answer of every triple goes in one batched ``logprob_of`` call per view. The triples
that matter are those base gets wrong (margin < 0); the **flip rate** is the fraction of
them whose margin ft makes positive.

**score**: the flip rate; with fewer than ``min_triples_for_decision`` triples that base
gets wrong, the mean margin change (ft - base) instead.

**verdict**: ``skip`` without triples; ``warn`` with too few triples base gets wrong to
decide (the mean margin change is reported); ``pass`` when the flip rate is at least
``assert_flip_rate_gte`` and, when a ``null_adapter`` calibrated the probe, its z-score
is at least ``min_z``; ``fail`` otherwise. The calibrated statistic is the score: the
flip rate, or the mean margin change when base gets too few wrong (which triples base
gets wrong does not depend on the adapter, so the real and the null adapters are
measured alike).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    Verdict,
    ViewFactory,
)
from swayscope.probes.divergence import FloatArray, finite
from swayscope.probes.measures import completion_logprobs, null_evidence, z_against, z_words


class PreferenceTriple(BaseModel):
    """A prompt, the answer preferred and the answer rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    chosen: str
    rejected: str

    @field_validator("prompt", "chosen", "rejected")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class PreferenceFlipSpec(ProbeSpec):
    """Spec of ``preference_flip``; every field has a default."""

    kind: Literal["preference_flip"] = "preference_flip"
    triples: tuple[PreferenceTriple, ...] = ()
    """The triples to score; empty: the training document's preference sections."""
    assert_flip_rate_gte: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """The fraction of the triples base gets wrong that ft must flip."""
    min_triples_for_decision: Annotated[int, Field(ge=1)] = 3
    """Triples base gets wrong needed to judge a flip rate."""
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require the score's z-score to be at least this."""


class PreferenceFlipProbe(Probe):
    """Chosen-vs-rejected margins under base and ft; the share of wrong ones ft flips."""

    kind: ClassVar[str] = "preference_flip"
    spec_class: ClassVar[type[ProbeSpec]] = PreferenceFlipSpec
    spec: PreferenceFlipSpec
    score_label: ClassVar[str] = "preferences flipped"
    score_unit: ClassVar[str] = "fraction"

    def triples(self, ctx: ProbeContext) -> list[PreferenceTriple]:
        if self.spec.triples:
            return list(self.spec.triples)
        doc = ctx.document
        return [
            PreferenceTriple(prompt=t.prompt, chosen=t.chosen, rejected=t.rejected)
            for s in (doc.of_kinds(("preference",)) if doc is not None else [])
            for t in s.preferences
        ]

    @staticmethod
    def _margins(factory: ViewFactory, triples: list[PreferenceTriple]) -> FloatArray:
        pairs = [(t.prompt, a) for t in triples for a in (t.chosen, t.rejected)]
        lps = completion_logprobs(factory, pairs, per_token=False)
        return lps[0::2] - lps[1::2]

    def _score(
        self, base: FloatArray, other: FloatArray
    ) -> tuple[float, bool]:
        """The flip rate (True), or the mean margin change when base gets too few wrong."""
        wrong = base < 0
        if int(wrong.sum()) < self.spec.min_triples_for_decision:
            return float((other - base).mean()), False
        return float((other[wrong] > 0).mean()), True

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """The score of base → ``other`` (None without triples)."""
        triples = self.triples(ctx)
        if not triples:
            return None
        base = self._margins(ctx.backend.base, triples)
        return self._score(base, self._margins(other, triples))[0]

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        triples = self.triples(ctx)
        if not triples:
            return self.result(
                "skip",
                message=(
                    "no preference triples: list them under triples, or name a training "
                    "document (dlm_source) with ::preference:: sections"
                ),
            )
        base = self._margins(ctx.backend.base, triples)
        ft = self._margins(ctx.backend.ft, triples)
        score, decided = self._score(base, ft)
        wrong = base < 0
        flipped = wrong & (ft > 0)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, score)
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Verdict
        if not decided:
            verdict = "warn"
            message = (
                f"base gets only {int(wrong.sum())} of {len(triples)} triples wrong (fewer than "
                f"{spec.min_triples_for_decision}): no flip rate; mean margin change "
                f"{score:+.3f} nats"
            )
        else:
            high = score >= spec.assert_flip_rate_gte
            verdict = "pass" if high and z_ok else "fail"
            message = (
                f"ft flips {int(flipped.sum())} of the {int(wrong.sum())} triples base ranks "
                f"wrong: flip rate {score:.0%} ({'≥' if high else '<'} "
                f"{spec.assert_flip_rate_gte:.0%}); mean margin {float(base.mean()):+.3f} → "
                f"{float(ft.mean()):+.3f} nats"
            )
        said = z_words(z, cal, spec.min_z)
        if said:
            message += f"; {said}"
        return self.result(
            verdict,
            score=score,
            z_score=finite(z),
            message=message,
            evidence={
                "score_is": "flip_rate" if decided else "mean_margin_delta",
                "flip_rate": score if decided else None,
                "flipped": int(flipped.sum()),
                "base_wrong": int(wrong.sum()),
                "total": len(triples),
                "mean_margin_base": float(base.mean()),
                "mean_margin_ft": float(ft.mean()),
                "mean_margin_delta": float((ft - base).mean()),
                "per_triple": [
                    {
                        "prompt_hash": ctx.backend.inst.hash_prompt(t.prompt),
                        "margin_base": float(b),
                        "margin_ft": float(f),
                    }
                    for t, b, f in zip(triples, base, ft, strict=True)
                ],
                "source": "spec triples" if spec.triples else (
                    ctx.document.source if ctx.document is not None else None
                ),
                "assert_flip_rate_gte": spec.assert_flip_rate_gte,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = ["PreferenceFlipProbe", "PreferenceFlipSpec", "PreferenceTriple"]
