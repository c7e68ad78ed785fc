"""``section_internalization``: which sections of the training document moved the model?

For each section ``s`` of the suite's training document (``dlm_source``) the probe
measures its negative log-likelihood per token under base and under ft:

- a prose section: ``rolling_logprob`` of its text (the first ``max_prose_chars``);
- an instruction section: each answer given its question (``logprob_of``), per
  estimated token (characters / 4), averaged; a preference section: each chosen answer
  given its prompt. A section without parsed pairs is scored as prose.

All sections go in one batched call per view and op. A section's **lift** is its
relative NLL drop, ``(m_base - m_ft) / m_base`` (the plain drop when ``m_base ≤ 0``),
and its **effective** lift is its own lift minus the mean lift of the other sections:
what this section gained beyond the document-wide shift. A section **cleared** when its
effective lift is at least ``per_section_threshold``.

**score**: the fraction of sections that cleared.

**verdict**: ``skip`` without a training document or with fewer than two sections of the
included kinds (there are no "other" sections); ``pass`` when at least
``assert_passing_section_frac`` of the sections cleared and, when a ``null_adapter``
calibrated the probe, the z-score is at least ``min_z``; ``fail`` otherwise. The
calibrated statistic is the mean lift over the sections (how much the adapter lowers the
document's NLL, against random adapters of its size): the mean *effective* lift is zero
by construction (each section's lift is subtracted from the others' as often as it is
counted), so it cannot be calibrated.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, ViewFactory
from swayscope.probes.divergence import FloatArray, bootstrap_ci, finite
from swayscope.probes.measures import completion_logprobs, null_evidence, z_against, z_words
from swayscope.probes.sections import NO_DOCUMENT, SECTION_KINDS, Section, SectionKind


def section_pairs(section: Section) -> list[tuple[str, str]]:
    """The (prompt, answer) pairs a section is scored on: its Q/A pairs or its chosen
    answers; none for prose."""
    if section.kind == "instruction":
        return [(p.prompt, p.gold) for p in section.pairs]
    if section.kind == "preference":
        return [(t.prompt, t.chosen) for t in section.preferences]
    return []


def relative_lift(base_nll: float, ft_nll: float) -> float:
    """``(base - ft) / base``: positive when ft finds the text more likely."""
    if base_nll <= 0.0:
        return base_nll - ft_nll
    return (base_nll - ft_nll) / base_nll


class SectionInternalizationSpec(ProbeSpec):
    """Spec of ``section_internalization``; every field has a default."""

    kind: Literal["section_internalization"] = "section_internalization"
    include_kinds: tuple[SectionKind, ...] = SECTION_KINDS
    """Which kinds of section to score."""
    per_section_threshold: Annotated[float, Field(allow_inf_nan=False)] = 0.05
    """The effective lift a section needs to count as cleared."""
    assert_passing_section_frac: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """The fraction of sections that must clear."""
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require the mean lift's z-score to be at least this."""
    max_prose_chars: Annotated[int, Field(ge=16)] = 2000
    """A prose section is scored on its first this many characters."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000

    @field_validator("include_kinds")
    @classmethod
    def _kinds(cls, v: tuple[SectionKind, ...]) -> tuple[SectionKind, ...]:
        if not v:
            raise ValueError(f"include_kinds is empty; name at least one of {list(SECTION_KINDS)}")
        return v


class SectionInternalizationProbe(Probe):
    """Per-section NLL lift of the training document, own section minus the others."""

    kind: ClassVar[str] = "section_internalization"
    spec_class: ClassVar[type[ProbeSpec]] = SectionInternalizationSpec
    spec: SectionInternalizationSpec
    score_label: ClassVar[str] = "sections that moved"
    score_unit: ClassVar[str] = "fraction"

    def sections(self, ctx: ProbeContext) -> list[Section]:
        doc = ctx.document
        return doc.of_kinds(self.spec.include_kinds) if doc is not None else []

    def _nll(self, factory: ViewFactory, sections: list[Section]) -> FloatArray:
        """Each section's NLL per token under one view: prose in one ``rolling_logprob``
        call, the pairs in one ``logprob_of`` call."""
        cap = self.spec.max_prose_chars
        prose = [i for i, s in enumerate(sections) if not section_pairs(s)]
        out = np.zeros(len(sections), dtype=np.float64)
        if prose:
            with factory() as view:
                rolls = view.rolling_logprob_batch([sections[i].content[:cap] for i in prose])
            for i, roll in zip(prose, rolls, strict=True):
                out[i] = -roll.mean
        owners = [(i, pair) for i, s in enumerate(sections) for pair in section_pairs(s)]
        if owners:
            lps = completion_logprobs(factory, [pair for _, pair in owners])
            for i in {i for i, _ in owners}:
                out[i] = -float(np.mean([lp for (j, _), lp in zip(owners, lps, strict=True)
                                         if j == i]))
        return out

    def _lifts(self, ctx: ProbeContext, other: ViewFactory, sections: list[Section]) -> FloatArray:
        base = self._nll(ctx.backend.base, sections)
        oth = self._nll(other, sections)
        return np.asarray([relative_lift(b, o) for b, o in zip(base, oth, strict=True)])

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """Mean lift over the sections (None without two sections to compare)."""
        sections = self.sections(ctx)
        if len(sections) < 2:
            return None
        return float(self._lifts(ctx, other, sections).mean())

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        if ctx.document is None:
            return self.result("skip", message=NO_DOCUMENT)
        sections = self.sections(ctx)
        if len(sections) < 2:
            return self.result(
                "skip",
                message=(
                    f"{ctx.document.source} has {len(sections)} section(s) of the kinds "
                    f"{', '.join(spec.include_kinds)}; at least 2 are needed to compare a "
                    "section with the others"
                ),
                evidence={"num_sections": len(sections)},
            )
        base = self._nll(ctx.backend.base, sections)
        ft = self._nll(ctx.backend.ft, sections)
        lifts = np.asarray([relative_lift(b, f) for b, f in zip(base, ft, strict=True)])
        n = len(sections)
        leak = (lifts.sum() - lifts) / (n - 1)
        effective = lifts - leak
        cleared = effective >= spec.per_section_threshold
        fraction = float(cleared.mean())
        mean_lift = float(lifts.mean())
        lo, hi = bootstrap_ci(lifts, n_boot=spec.n_boot, seed=ctx.defaults.seed)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, mean_lift)
        enough = fraction >= spec.assert_passing_section_frac
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if enough and z_ok else "fail"
        best = int(np.argmax(effective))
        parts = [
            f"{int(cleared.sum())}/{n} sections cleared an effective lift of "
            f"{spec.per_section_threshold:g} ({fraction:.0%} "
            f"{'≥' if enough else '<'} {spec.assert_passing_section_frac:.0%})",
            f"mean lift {mean_lift:+.3f} (95% CI {lo:+.3f}..{hi:+.3f})",
            f"most specific: {sections[best].label!r} ({effective[best]:+.3f})",
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
                "per_section": [
                    {
                        "section_id": s.id,
                        "kind": s.kind,
                        "tag": s.tag or "",
                        "base_nll": float(b),
                        "ft_nll": float(f),
                        "own_lift": float(lift),
                        "leak_lift": float(other),
                        "effective_sis": float(e),
                        "passed": bool(c),
                    }
                    for s, b, f, lift, other, e, c in zip(
                        sections, base, ft, lifts, leak, effective, cleared, strict=True
                    )
                ],
                "num_sections": n,
                "passing_frac": fraction,
                "mean_lift": mean_lift,
                "ci_low": lo,
                "ci_high": hi,
                "per_section_threshold": spec.per_section_threshold,
                "assert_passing_section_frac": spec.assert_passing_section_frac,
                "source": ctx.document.source,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = [
    "SectionInternalizationProbe",
    "SectionInternalizationSpec",
    "relative_lift",
    "section_pairs",
]
