"""``adapter_revert``: does the fine-tune fall back to the base model when asked differently?

Each case is a prompt, the gold answer the adapter was trained to give, and paraphrases
of the prompt (reframings, adversarial or long contexts). Base and ft each continue every
paraphrase greedily (one batched ``generate`` call per view). For a paraphrase, ft has
**reverted** when its answer is more like base's than like the gold answer:
``sim(ft, base) > sim(ft, gold)``. The similarity is the cosine of the two texts' word
unigram and bigram counts: lexical, not semantic (dlm-sway uses sentence embeddings,
which swayscope does not load), so it rewards answers that share the gold answer's
words. A paraphrase whose base answer is already like the gold one
(``sim(base, gold) > base_gold_similarity_cap``) cannot tell reverting from adhering
and is left out.

**score**: the revert rate, the fraction of the paraphrases kept that reverted.

**verdict**: ``warn`` when every paraphrase was left out (nothing separable);
``pass`` when the revert rate is below ``assert_revert_rate_lt``; ``fail`` otherwise.
Not calibrated against null adapters (as in dlm-sway): a random adapter has no gold
answer to revert from.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, Verdict
from swayscope.probes.measures import ngram_cosine
from swayscope.probes.paraphrase_invariance import ParaphraseCase

#: Each case as adapter_revert reads it: a prompt, its gold answer, its paraphrases.
RevertCase = ParaphraseCase


class AdapterRevertSpec(ProbeSpec):
    """Spec of ``adapter_revert``: ``cases`` is required."""

    kind: Literal["adapter_revert"] = "adapter_revert"
    cases: tuple[RevertCase, ...] = Field(min_length=1)
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    base_gold_similarity_cap: Annotated[float, Field(ge=0.0, le=1.0)] = 0.75
    """Leave out paraphrases whose base answer is already this similar to the gold one."""
    assert_revert_rate_lt: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25


class AdapterRevertProbe(Probe):
    """Whether ft's answers to paraphrased prompts look like base's or like the gold."""

    kind: ClassVar[str] = "adapter_revert"
    spec_class: ClassVar[type[ProbeSpec]] = AdapterRevertSpec
    spec: AdapterRevertSpec
    score_label: ClassVar[str] = "answers reverted"
    score_unit: ClassVar[str] = "fraction"

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        asked = [(c, p) for c in spec.cases for p in c.paraphrases]
        prompts = [p for _, p in asked]
        with ctx.backend.base() as view:
            base = view.generate_batch(prompts, max_new_tokens=spec.max_new_tokens)
        with ctx.backend.ft() as view:
            ft = view.generate_batch(prompts, max_new_tokens=spec.max_new_tokens)
        kept = []
        dropped = 0
        for (case, prompt), b, f in zip(asked, base, ft, strict=True):
            base_gold = ngram_cosine(b.text, case.gold)
            if base_gold > spec.base_gold_similarity_cap:
                dropped += 1
                continue
            to_base = ngram_cosine(f.text, b.text)
            to_gold = ngram_cosine(f.text, case.gold)
            kept.append(
                {
                    "prompt_hash": ctx.backend.inst.hash_prompt(prompt),
                    "sim_ft_base": to_base,
                    "sim_ft_gold": to_gold,
                    "sim_base_gold": base_gold,
                    "reverted": to_base > to_gold,
                }
            )
        evidence: dict[str, object] = {
            "similarity": "cosine of word unigram and bigram counts",
            "total": len(asked),
            "kept": len(kept),
            "dropped_trivial": dropped,
            "per_paraphrase": kept,
            "max_new_tokens": spec.max_new_tokens,
            "base_gold_similarity_cap": spec.base_gold_similarity_cap,
            "assert_revert_rate_lt": spec.assert_revert_rate_lt,
            "calibrated": False,
        }
        if not kept:
            return self.result(
                "warn",
                message=(
                    f"every one of the {len(asked)} paraphrases has a base answer already like "
                    f"the gold one (similarity > {spec.base_gold_similarity_cap:g}): reverting "
                    "and adhering look the same"
                ),
                evidence=evidence,
            )
        reverts = sum(1 for k in kept if k["reverted"])
        rate = reverts / len(kept)
        evidence["reverts"] = reverts
        evidence["revert_rate"] = rate
        low = rate < spec.assert_revert_rate_lt
        verdict: Verdict = "pass" if low else "fail"
        return self.result(
            verdict,
            score=rate,
            message=(
                f"ft's answer is closer to base's than to the gold answer on {reverts} of "
                f"{len(kept)} paraphrases: revert rate {rate:.0%} ({'<' if low else '≥'} "
                f"{spec.assert_revert_rate_lt:.0%})"
                + (f"; {dropped} left out (base already like gold)" if dropped else "")
            ),
            evidence=evidence,
        )


__all__ = ["AdapterRevertProbe", "AdapterRevertSpec", "RevertCase"]
