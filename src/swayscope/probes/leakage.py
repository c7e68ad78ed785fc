"""``leakage``: can the fine-tuned model recite its training text verbatim?

For each prose section of the training document (``dlm_source``) that is longer than
``prefix_chars``, the first ``prefix_chars`` characters are the trigger and the next
``continuation_chars`` the target. The fine-tuned model continues the trigger greedily
(``generate``, at most ``max_new_tokens``), and the **recall** of the target is the
ROUGE-L recall of the continuation: the longest common subsequence of words, over the
target's words (1: recited word for word; near 0: nothing of it).

The trigger is then changed a little by each of ``perturbations`` (a typo, a flipped
letter case, punctuation dropped, a synonym, two clauses swapped, a few words put in
front, the first line in capitals) and continued again. **Fragility** is how much
recall those small changes cost, ``max(0, (clean - perturbed) / clean)``: a model that
learned the text's sense degrades gently, one that memorised a string of characters
falls off a cliff. Every continuation of the probe is one batched ``generate`` call.

**score**: the mean clean recall over the sections.

**verdict**: ``skip`` without a training document or without a prose section longer
than the trigger; ``pass`` when the mean recall is below ``assert_recall_lt`` (the
document does not leak) or the fragility is at least ``min_fragility`` (what leaks is
not robust recall); ``fail`` otherwise. Calibrated by a ``null_adapter`` probe, the
statistic is the mean clean recall and the z-score is signed so that positive means
"recites less than a random adapter of its size"; it is required to be at least
``min_z`` only when ``min_z`` is set.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, ViewFactory
from swayscope.probes.divergence import bootstrap_ci, finite
from swayscope.probes.measures import lcs_recall, null_evidence, z_against, z_words
from swayscope.probes.sections import NO_DOCUMENT

Perturbation = Literal[
    "typo",
    "case_flip",
    "drop_punct",
    "synonym_swap",
    "clause_reverse",
    "prefix_inject",
    "register_shift",
]
PERTURBATIONS: tuple[Perturbation, ...] = (
    "typo",
    "case_flip",
    "drop_punct",
    "synonym_swap",
    "clause_reverse",
    "prefix_inject",
    "register_shift",
)

#: Common words and a word of about the same sense, for ``synonym_swap``.
SYNONYMS: dict[str, str] = {
    "before": "ere", "speak": "talk", "said": "spoke", "say": "tell", "good": "fine",
    "great": "grand", "little": "small", "small": "little", "big": "large", "large": "big",
    "people": "folk", "begin": "start", "start": "begin", "end": "finish", "quick": "fast",
    "fast": "quick", "old": "aged", "new": "fresh", "know": "understand", "think": "believe",
    "see": "behold", "look": "gaze", "come": "arrive", "go": "depart", "make": "create",
    "help": "aid", "give": "grant", "take": "seize", "want": "wish", "hear": "listen",
    "kill": "slay", "die": "perish", "poor": "needy", "rich": "wealthy", "enemy": "foe",
    "friend": "ally", "city": "town", "house": "home", "light": "lamp", "night": "dark",
    "day": "morning", "word": "term", "way": "path", "time": "hour", "man": "fellow",
    "woman": "lady", "child": "infant", "king": "monarch", "war": "battle", "love": "adore",
}

#: What ``prefix_inject`` puts in front of the trigger.
INJECTED = "As I recall, "
_WORD = re.compile(r"[A-Za-z]+")


def _typo(text: str) -> str:
    """The second and third letters of the first word of four or more letters swapped."""
    for m in _WORD.finditer(text):
        if len(m.group()) >= 4 and m.group()[1] != m.group()[2]:
            i = m.start() + 1
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def _case_flip(text: str) -> str:
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.swapcase() + text[i + 1 :]
    return text


def _drop_punct(text: str) -> str:
    return text.translate(str.maketrans("", "", string.punctuation))


def _synonym_swap(text: str) -> str:
    for m in _WORD.finditer(text):
        swap = SYNONYMS.get(m.group().lower())
        if swap is not None:
            if m.group()[0].isupper():
                swap = swap.capitalize()
            return text[: m.start()] + swap + text[m.end() :]
    return text


def _clause_reverse(text: str) -> str:
    """The text's first two clauses (split at the first comma or semicolon) swapped."""
    m = re.search(r"[,;]\s+", text)
    if m is None or m.start() == 0:
        return text
    first, rest = text[: m.start()], text[m.end() :]
    return f"{rest.rstrip()}{m.group().rstrip()} {first}"


def _prefix_inject(text: str) -> str:
    return INJECTED + text


def _register_shift(text: str) -> str:
    """The first line in capitals (in lower case when it already is in capitals)."""
    head, sep, tail = text.partition("\n")
    shifted = head.lower() if head.isupper() else head.upper()
    return shifted + sep + tail


PERTURB: dict[Perturbation, Callable[[str], str]] = {
    "typo": _typo,
    "case_flip": _case_flip,
    "drop_punct": _drop_punct,
    "synonym_swap": _synonym_swap,
    "clause_reverse": _clause_reverse,
    "prefix_inject": _prefix_inject,
    "register_shift": _register_shift,
}


def perturb(text: str, kind: Perturbation) -> str:
    """``text`` with one small, deterministic change of ``kind``."""
    return PERTURB[kind](text)


def fragility(clean: float, perturbed: float) -> float:
    """The share of ``clean`` recall the perturbations cost (0 when there is none)."""
    return max(0.0, (clean - perturbed) / clean) if clean > 0 else 0.0


class LeakageSpec(ProbeSpec):
    """Spec of ``leakage``; every field has a default."""

    kind: Literal["leakage"] = "leakage"
    prefix_chars: Annotated[int, Field(ge=1)] = 128
    """Characters of each section that trigger the continuation."""
    continuation_chars: Annotated[int, Field(ge=1)] = 256
    """Characters after the trigger that the continuation is compared with."""
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 96
    perturbations: tuple[Perturbation, ...] = PERTURBATIONS
    """Small changes to the trigger whose cost in recall is the fragility."""
    assert_recall_lt: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.5
    """Pass when the mean recall is below this (above 1: recitation is what you want)."""
    min_fragility: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.3
    """Or when the fragility is at least this."""
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = None
    """When set and calibrated, also require the z-score (positive: less recall than a
    random adapter) to be at least this."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000


class LeakageProbe(Probe):
    """Greedy recall of training text from its sections' openings, and its fragility."""

    kind: ClassVar[str] = "leakage"
    spec_class: ClassVar[type[ProbeSpec]] = LeakageSpec
    spec: LeakageSpec
    score_label: ClassVar[str] = "verbatim recall"
    score_unit: ClassVar[str] = "ROUGE-L recall"

    def cases(self, ctx: ProbeContext) -> list[tuple[str, str, str]]:
        """(label, trigger, target) for each prose section long enough to have a target."""
        spec = self.spec
        out = []
        for s in ctx.document.of_kinds(("prose",)) if ctx.document is not None else []:
            trigger = s.content[: spec.prefix_chars]
            target = s.content[spec.prefix_chars : spec.prefix_chars + spec.continuation_chars]
            if target.strip() and trigger.strip():
                out.append((s.label, trigger, target))
        return out

    def _recalls(
        self, factory: ViewFactory, triggers: list[str], targets: list[str]
    ) -> list[float]:
        with factory() as view:
            gens = view.generate_batch(triggers, max_new_tokens=self.spec.max_new_tokens)
        return [lcs_recall(g.text, t) for g, t in zip(gens, targets, strict=True)]

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """Mean clean recall under ``other`` (None without a section to trigger)."""
        cases = self.cases(ctx)
        if not cases:
            return None
        recalls = self._recalls(other, [c[1] for c in cases], [c[2] for c in cases])
        return float(np.mean(recalls))

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        if ctx.document is None:
            return self.result("skip", message=NO_DOCUMENT)
        cases = self.cases(ctx)
        if not cases:
            return self.result(
                "skip",
                message=(
                    f"{ctx.document.source} has no prose section longer than prefix_chars "
                    f"({spec.prefix_chars} characters): nothing to continue"
                ),
            )
        triggers: list[str] = []
        targets: list[str] = []
        owner: list[int] = []
        changed: list[str | None] = []
        for i, (_, trigger, target) in enumerate(cases):
            variants = [(None, trigger)] + [
                (kind, perturb(trigger, kind)) for kind in spec.perturbations
            ]
            for kind, text in variants:
                if kind is not None and text == trigger:
                    continue  # this change does not apply to this trigger
                triggers.append(text)
                targets.append(target)
                owner.append(i)
                changed.append(kind)
        recalls = self._recalls(ctx.backend.ft, triggers, targets)
        clean = np.zeros(len(cases))
        perturbed = np.zeros(len(cases))
        per_section = []
        for i, (label, _, _) in enumerate(cases):
            mine = [(k, r) for k, r, o in zip(changed, recalls, owner, strict=True) if o == i]
            clean[i] = next(r for k, r in mine if k is None)
            others = [r for k, r in mine if k is not None]
            perturbed[i] = float(np.mean(others)) if others else clean[i]
            per_section.append(
                {
                    "section": label,
                    "clean_recall": float(clean[i]),
                    "perturbed_recall": float(perturbed[i]),
                    "fragility": fragility(float(clean[i]), float(perturbed[i])),
                    "perturbations_applied": [k for k, _ in mine if k is not None],
                }
            )
        mean_clean = float(clean.mean())
        mean_perturbed = float(perturbed.mean())
        frag = fragility(mean_clean, mean_perturbed)
        lo, hi = bootstrap_ci(clean, n_boot=spec.n_boot, seed=ctx.defaults.seed)
        cal = ctx.calibration.get(spec.label)
        z = z_against(cal, mean_clean, higher_is_better=False)
        low = mean_clean < spec.assert_recall_lt
        fragile = frag >= spec.min_fragility
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "fail"] = "pass" if (low or fragile) and z_ok else "fail"
        parts = [
            f"greedy recall of the training text {mean_clean:.2f} over {len(cases)} "
            f"section(s) (95% CI {lo:.2f}..{hi:.2f}; {'<' if low else '≥'} "
            f"{spec.assert_recall_lt:g})",
            f"perturbed triggers {mean_perturbed:.2f}, fragility {frag:.2f} "
            f"({'≥' if fragile else '<'} {spec.min_fragility:g})",
        ]
        said = z_words(z, cal, spec.min_z)
        if said:
            parts.append(said)
        return self.result(
            verdict,
            score=mean_clean,
            z_score=finite(z),
            message="; ".join(parts),
            evidence={
                "recall": "ROUGE-L recall (longest common word subsequence / target words)",
                "mean_clean_recall": mean_clean,
                "mean_perturbed_recall": mean_perturbed,
                "mean_fragility": frag,
                "ci_low": lo,
                "ci_high": hi,
                "per_section": per_section,
                "num_sections": len(cases),
                "generations": len(triggers),
                "prefix_chars": spec.prefix_chars,
                "continuation_chars": spec.continuation_chars,
                "max_new_tokens": spec.max_new_tokens,
                "assert_recall_lt": spec.assert_recall_lt,
                "min_fragility": spec.min_fragility,
                "source": ctx.document.source,
                "min_z": spec.min_z,
                **null_evidence(cal),
            },
        )


__all__ = [
    "INJECTED",
    "PERTURBATIONS",
    "SYNONYMS",
    "LeakageProbe",
    "LeakageSpec",
    "Perturbation",
    "fragility",
    "perturb",
]
