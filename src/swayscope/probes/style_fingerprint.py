"""``style_fingerprint``: does the fine-tune's prose read like the training document?

Base and ft each continue a set of open, content-neutral prompts greedily (one batched
``generate`` call per view); the continuations of each are joined into one text. A
**fingerprint** of a text is a vector of seven stylometric features, each scaled to
about 1:

0. mean words per sentence / 25;
1. standard deviation of words per sentence / 25;
2. moving-average type-token ratio over 50-word windows (vocabulary richness that does
   not shrink as the text grows, so a long document compares with short samples);
3. mean word length in characters / 6;
4. punctuation marks per word;
5. the share of words that start with a capital letter;
6. line breaks per word x 5 (verse, dialogue and lists break lines often).

The **style shift** is how far ft moved from base toward the document, as a fraction of
the distance: the projection of ``ft - base`` on ``doc - base`` over ``|doc - base|²``
(0: no change, 1: ft writes like the document, negative: it moved away). The document is
``doc_reference``, else the training document's text (``dlm_source``).

**score**: the style shift.

**verdict**: ``skip`` without a document to compare with; ``fail`` when ft generates no
words (no prose to move toward the document; the score is then None); ``pass`` when the
shift is at least
``assert_shift_gte`` and, when a ``null_adapter`` calibrated the probe, its z-score is
at least ``min_z``; ``fail`` otherwise. The calibrated statistic is the shift.
"""

from __future__ import annotations

import re
import statistics
import string
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, ViewFactory
from swayscope.probes.defaults import check_prompts
from swayscope.probes.divergence import FloatArray, finite
from swayscope.probes.measures import null_evidence, z_against, z_words
from swayscope.probes.sections import NO_DOCUMENT

#: Open prompts that ask for a paragraph of prose and say nothing of its subject.
STYLE_PROMPTS: tuple[str, ...] = (
    "Write a short paragraph about a morning walk.",
    "Describe the room you are sitting in.",
    "Tell a short story about a traveller who arrives late.",
    "Explain what makes a good friend.",
    "Describe the weather on a stormy day.",
    "Write a few lines about a river.",
)

FEATURES: tuple[str, ...] = (
    "words_per_sentence",
    "sentence_length_spread",
    "type_token_ratio",
    "word_length",
    "punctuation_per_word",
    "capitalised_share",
    "line_breaks",
)

#: Words per window of the moving-average type-token ratio.
TTR_WINDOW = 50

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_PUNCT = set(string.punctuation)


def _moving_ttr(words: list[str]) -> float:
    lower = [w.lower() for w in words]
    if len(lower) <= TTR_WINDOW:
        return len(set(lower)) / len(lower)
    ratios = [
        len(set(lower[i : i + TTR_WINDOW])) / TTR_WINDOW
        for i in range(len(lower) - TTR_WINDOW + 1)
    ]
    return float(np.mean(ratios))


def fingerprint(text: str) -> FloatArray:
    """The seven stylometric features of ``text`` (zeros when it has no words)."""
    words = _WORD.findall(text)
    if not words:
        return np.zeros(len(FEATURES), dtype=np.float64)
    lengths = [n for n in (len(_WORD.findall(s)) for s in _SENTENCE_END.split(text)) if n]
    return np.asarray(
        [
            statistics.fmean(lengths) / 25.0,
            (statistics.pstdev(lengths) if len(lengths) > 1 else 0.0) / 25.0,
            _moving_ttr(words),
            statistics.fmean(len(w) for w in words) / 6.0,
            sum(ch in _PUNCT for ch in text) / len(words),
            sum(w[0].isupper() for w in words) / len(words),
            5.0 * text.count("\n") / len(words),
        ],
        dtype=np.float64,
    )


def style_shift(base: FloatArray, ft: FloatArray, doc: FloatArray) -> float:
    """The fraction of the way from ``base`` to ``doc`` that ``ft`` moved (0 when the
    document's fingerprint is base's)."""
    gap = doc - base
    norm = float(gap @ gap)
    return float((ft - base) @ gap / norm) if norm > 0 else 0.0


class StyleFingerprintSpec(ProbeSpec):
    """Spec of ``style_fingerprint``; every field has a default."""

    kind: Literal["style_fingerprint"] = "style_fingerprint"
    prompts: tuple[str, ...] = STYLE_PROMPTS
    """Prompts each view continues; default: six open, content-neutral ones."""
    doc_reference: str = ""
    """The text whose style ft should move toward; empty: the training document."""
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 128
    assert_shift_gte: Annotated[float, Field(allow_inf_nan=False)] = 0.25
    """The smallest style shift that passes."""
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require the shift's z-score to be at least this."""

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_prompts(v)


class StyleFingerprintProbe(Probe):
    """How far ft's generated prose moved from base's toward the document's style."""

    kind: ClassVar[str] = "style_fingerprint"
    spec_class: ClassVar[type[ProbeSpec]] = StyleFingerprintSpec
    spec: StyleFingerprintSpec
    score_label: ClassVar[str] = "style gap closed"
    score_unit: ClassVar[str] = "fraction of the gap"

    def reference(self, ctx: ProbeContext) -> str:
        if self.spec.doc_reference.strip():
            return self.spec.doc_reference
        return ctx.document.text if ctx.document is not None else ""

    def _sample(self, factory: ViewFactory) -> str:
        with factory() as view:
            gens = view.generate_batch(
                list(self.spec.prompts), max_new_tokens=self.spec.max_new_tokens
            )
        return "\n".join(g.text for g in gens)

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """The style shift of base → ``other`` (None without a reference text)."""
        doc = self.reference(ctx)
        if not doc.strip():
            return None
        base = fingerprint(self._sample(ctx.backend.base))
        return style_shift(base, fingerprint(self._sample(other)), fingerprint(doc))

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        doc = self.reference(ctx)
        if not doc.strip():
            return self.result(
                "skip",
                message=f"no text to compare styles with: give doc_reference, or {NO_DOCUMENT}",
            )
        base_fp = fingerprint(self._sample(ctx.backend.base))
        ft_text = self._sample(ctx.backend.ft)
        ft_fp = fingerprint(ft_text)
        doc_fp = fingerprint(doc)
        fps = {
            "base_fp": [float(x) for x in base_fp],
            "ft_fp": [float(x) for x in ft_fp],
            "doc_fp": [float(x) for x in doc_fp],
            "features": list(FEATURES),
        }
        if not _WORD.search(ft_text):
            return self.result(
                "fail",
                message=(
                    "the fine-tuned model generated no words for any prompt: no prose whose "
                    "style could move toward the document's"
                ),
                evidence=fps,
            )
        shift = style_shift(base_fp, ft_fp, doc_fp)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, shift)
        far = shift >= spec.assert_shift_gte
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if far and z_ok else "fail"
        moved = int(np.argmax(np.abs(ft_fp - base_fp)))
        parts = [
            f"ft's prose moved {shift:+.2f} of the way from base's style toward the "
            f"document's ({'≥' if far else '<'} {spec.assert_shift_gte:g})",
            f"largest change: {FEATURES[moved]} {base_fp[moved]:.3g} → {ft_fp[moved]:.3g} "
            f"(document {doc_fp[moved]:.3g})",
        ]
        said = z_words(z, cal, spec.min_z)
        if said:
            parts.append(said)
        return self.result(
            verdict,
            score=shift,
            z_score=finite(z),
            message="; ".join(parts),
            evidence={
                "style_shift": shift,
                **fps,
                "n_prompts": len(spec.prompts),
                "max_new_tokens": spec.max_new_tokens,
                "reference": "doc_reference" if spec.doc_reference.strip() else (
                    ctx.document.source if ctx.document is not None else None
                ),
                "assert_shift_gte": spec.assert_shift_gte,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = [
    "FEATURES",
    "STYLE_PROMPTS",
    "StyleFingerprintProbe",
    "StyleFingerprintSpec",
    "fingerprint",
    "style_shift",
]
