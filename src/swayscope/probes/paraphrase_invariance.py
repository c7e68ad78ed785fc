"""``paraphrase_invariance``: did the fine-tune memorise a prompt or learn what it asks?

Each case is a prompt, its gold answer and paraphrases of the prompt. The **lift** of a
(prompt, answer) pair is how much more likely ft finds the answer than base does, per
estimated token (characters / 4):
``(log p_ft(gold | prompt) - log p_base(gold | prompt)) / T(gold)``. Per case, the
verbatim lift is the pair's with the original prompt and the paraphrase lift the mean
over its paraphrases; every pair of every case goes in one batched ``logprob_of`` call
per view. The **generalisation ratio** is the mean paraphrase lift over the mean
verbatim lift: about 1 when the adapter answers the question however it is asked,
about 0 when it only answers the words it was trained on.

**score**: the mean verbatim lift (nats per token).

**verdict**, by ``intent``: ``generalize`` (or ``both``) passes when the mean verbatim
lift is at least ``min_verbatim_lift`` and the ratio at least
``min_generalization_ratio``; ``memorize`` passes when the verbatim lift is at least
``min_verbatim_lift`` and the ratio at most ``max_generalization_ratio_if_memorize``.
Calibrated by a ``null_adapter`` probe, the statistic is the mean verbatim lift and its
z-score must also be at least ``min_z``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, ViewFactory
from swayscope.probes.divergence import FloatArray, bootstrap_ci, finite
from swayscope.probes.measures import completion_logprobs, null_evidence, z_against, z_words

Intent = Literal["generalize", "memorize", "both"]

#: A mean verbatim lift this close to zero gives no ratio (it would be noise over noise).
ZERO_LIFT = 1e-9


class ParaphraseCase(BaseModel):
    """A prompt, its gold answer and at least one paraphrase of the prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    gold: str
    paraphrases: tuple[str, ...] = Field(min_length=1)

    @field_validator("prompt", "gold")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("paraphrases")
    @classmethod
    def _paraphrases(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, p in enumerate(v):
            if not p.strip():
                raise ValueError(f"paraphrases[{i}] is blank")
        return v


class ParaphraseInvarianceSpec(ProbeSpec):
    """Spec of ``paraphrase_invariance``: ``cases`` is required."""

    kind: Literal["paraphrase_invariance"] = "paraphrase_invariance"
    cases: tuple[ParaphraseCase, ...] = Field(min_length=1)
    intent: Intent = "generalize"
    min_verbatim_lift: Annotated[float, Field(allow_inf_nan=False)] = 0.2
    min_generalization_ratio: Annotated[float, Field(allow_inf_nan=False)] = 0.5
    max_generalization_ratio_if_memorize: Annotated[float, Field(allow_inf_nan=False)] = 0.5
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require the mean verbatim lift's z-score to be at least this."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000

    def pairs(self) -> list[tuple[str, str]]:
        """Every (prompt, gold) pair scored: per case, the prompt, then its paraphrases."""
        return [(q, c.gold) for c in self.cases for q in (c.prompt, *c.paraphrases)]


class ParaphraseInvarianceProbe(Probe):
    """Verbatim and paraphrased log-probability lift of gold answers, base → ft."""

    kind: ClassVar[str] = "paraphrase_invariance"
    spec_class: ClassVar[type[ProbeSpec]] = ParaphraseInvarianceSpec
    spec: ParaphraseInvarianceSpec
    score_label: ClassVar[str] = "verbatim lift"
    score_unit: ClassVar[str] = "nats/token"

    def _lifts(self, ctx: ProbeContext, other: ViewFactory) -> tuple[FloatArray, FloatArray]:
        """Per case: the verbatim lift and the mean paraphrase lift."""
        pairs = self.spec.pairs()
        lift = completion_logprobs(other, pairs) - completion_logprobs(ctx.backend.base, pairs)
        verbatim, paraphrased = [], []
        i = 0
        for case in self.spec.cases:
            verbatim.append(lift[i])
            paraphrased.append(float(lift[i + 1 : i + 1 + len(case.paraphrases)].mean()))
            i += 1 + len(case.paraphrases)
        return np.asarray(verbatim), np.asarray(paraphrased)

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """Mean verbatim lift of base → ``other``."""
        return float(self._lifts(ctx, other)[0].mean())

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        verbatim, paraphrased = self._lifts(ctx, ctx.backend.ft)
        verb = float(verbatim.mean())
        para = float(paraphrased.mean())
        ratio = para / verb if abs(verb) > ZERO_LIFT else None
        lo, hi = bootstrap_ci(verbatim, n_boot=spec.n_boot, seed=ctx.defaults.seed)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, verb)
        lifted = verb >= spec.min_verbatim_lift
        if spec.intent == "memorize":
            shape_ok = ratio is not None and ratio <= spec.max_generalization_ratio_if_memorize
            wanted = f"ratio ≤ {spec.max_generalization_ratio_if_memorize:g} (memorize)"
        else:
            shape_ok = ratio is not None and ratio >= spec.min_generalization_ratio
            wanted = f"ratio ≥ {spec.min_generalization_ratio:g} ({spec.intent})"
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if lifted and shape_ok and z_ok else "fail"
        shown_ratio = f"{ratio:.2f}" if ratio is not None else "undefined (no verbatim lift)"
        parts = [
            f"verbatim lift {verb:+.3f} nats/token (95% CI {lo:+.3f}..{hi:+.3f}; "
            f"{'≥' if lifted else '<'} {spec.min_verbatim_lift:g})",
            f"paraphrase lift {para:+.3f}",
            f"generalisation ratio {shown_ratio}, wanted {wanted}",
        ]
        said = z_words(z, cal, spec.min_z)
        if said:
            parts.append(said)
        return self.result(
            verdict,
            score=verb,
            z_score=finite(z),
            message="; ".join(parts),
            evidence={
                "unit": "nats/token (characters / 4)",
                "verbatim_lift_mean": verb,
                "paraphrase_lift_mean": para,
                "generalization_ratio": finite(ratio),
                "intent": spec.intent,
                "ci_low": lo,
                "ci_high": hi,
                "per_case": [
                    {
                        "prompt_hash": ctx.backend.inst.hash_prompt(c.prompt),
                        "verbatim_lift": float(v),
                        "paraphrase_lift": float(p),
                    }
                    for c, v, p in zip(spec.cases, verbatim, paraphrased, strict=True)
                ],
                "num_cases": len(spec.cases),
                "min_verbatim_lift": spec.min_verbatim_lift,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = [
    "Intent",
    "ParaphraseCase",
    "ParaphraseInvarianceProbe",
    "ParaphraseInvarianceSpec",
]
