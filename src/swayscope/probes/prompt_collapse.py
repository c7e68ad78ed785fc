"""``prompt_collapse``: does the adapter's effect survive a longer, neutral context?

Some adapters only move the model right at the start of a sequence: put some
ordinary text in front of the prompt and the fine-tune behaves like the base
model again. This probe prepends the first ``n`` words of a neutral text
(:data:`~swayscope.probes.defaults.NEUTRAL_CONTEXT`, cycled if short) to every
prompt, for each ``n`` in ``context_words`` (the first must be 0, the bare
prompt, which is served from ``delta_kl``'s cache entries), and measures the
mean base-vs-ft next-token divergence at each length. All prompts at all
lengths go in one batched call per view.

The **half-life** is the added context length at which the divergence first
falls to half its value at length 0, linearly interpolated between the two
measured lengths around the crossing; None when it never does within the
sweep. It is measured in **tokens** (the mean number of tokens the context adds,
from the backend's ``n_tokens``), or in words when the backend does not report
token counts (``half_life_unit`` says which).

**score**: retention = divergence at the longest context / divergence at length
0 (1 = the effect is fully kept, 0 = it is gone); None when the divergence at 0
is ≈ 0.

**verdict**: ``fail`` when the divergence at length 0 is ≈ 0 (≤ 1e-9 nats);
``warn`` when it is below ``threshold`` (the same default as ``delta_kl``: an
effect too small to count is too small to say it survives), when the half-life
is below ``min_half_life`` (the effect collapses quickly) or the retention is
below ``min_retention`` (the effect is all but gone at the longest context,
however slowly it got there); ``pass`` otherwise
(including no half-life within the sweep). The half-life is only as fine as the
sweep: linear interpolation between two lengths overestimates a fast,
exponential-looking decay, which is what ``min_retention`` catches.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec, Verdict
from swayscope.probes.defaults import (
    DEFAULT_COLLAPSE_PROMPTS,
    DEFAULT_CONTEXT_WORDS,
    NEUTRAL_CONTEXT,
    check_prompts,
    context_words,
)
from swayscope.probes.delta_kl import DEFAULT_THRESHOLDS
from swayscope.probes.divergence import (
    ZERO_DIVERGENCE,
    DivergenceKind,
    FloatArray,
    divergences,
    finite,
    view_dists,
)


class PromptCollapseSpec(ProbeSpec):
    """Spec of ``prompt_collapse``; every field has a default."""

    kind: Literal["prompt_collapse"] = "prompt_collapse"
    prompts: tuple[str, ...] = DEFAULT_COLLAPSE_PROMPTS
    context_words: tuple[int, ...] = DEFAULT_CONTEXT_WORDS
    """Words of neutral context to prepend: starts at 0, strictly increasing, ≥ 2 values."""
    context_text: str | None = None
    """Neutral text to take the words from; default: the built-in neutral passage."""
    separator: str = "\n\n"
    """Put between the context and the prompt."""
    divergence: DivergenceKind = "js"
    threshold: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    """Divergence on the bare prompts below which the verdict is at most ``warn``;
    default as delta_kl (JS 0.005, KL 0.02 nats)."""
    min_half_life: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 32.0
    """A half-life (tokens, or words without token counts) below this gives ``warn``."""
    min_retention: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    """A retention (divergence at the longest context / at 0) below this gives ``warn``."""

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_prompts(v)

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.divergence]

    @field_validator("context_words")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) < 2:
            raise ValueError(
                f"need at least 2 context lengths (0 and a longer one); got {list(v)}. "
                f"Example: {list(DEFAULT_CONTEXT_WORDS)}"
            )
        if v[0] != 0:
            raise ValueError(f"the first context length must be 0 (the bare prompt); got {list(v)}")
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError(f"context lengths must be strictly increasing; got {list(v)}")
        return v

    @field_validator("context_text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.split():
            raise ValueError("context_text has no words; leave it out to use the built-in text")
        return v


def half_life(x: FloatArray, divs: FloatArray) -> float | None:
    """First x where ``divs`` falls to half of ``divs[0]`` (interpolated); None if never."""
    target = 0.5 * float(divs[0])
    for i in range(1, divs.size):
        d = float(divs[i])
        if d <= target:
            d0, x0, x1 = float(divs[i - 1]), float(x[i - 1]), float(x[i])
            if d0 == d:
                return x0
            return x0 + (d0 - target) * (x1 - x0) / (d0 - d)
    return None


class PromptCollapseProbe(Probe):
    """Base-vs-ft divergence as neutral context of growing length is prepended."""

    kind: ClassVar[str] = "prompt_collapse"
    spec_class: ClassVar[type[ProbeSpec]] = PromptCollapseSpec
    spec: PromptCollapseSpec

    def prompts_at(self, n_words: int) -> list[str]:
        """The spec's prompts with ``n_words`` of neutral context in front (0: unchanged)."""
        spec = self.spec
        if n_words == 0:
            return list(spec.prompts)
        prefix = context_words(n_words, spec.context_text or NEUTRAL_CONTEXT) + spec.separator
        return [prefix + p for p in spec.prompts]

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        top_k = ctx.defaults.top_k
        n_p = len(spec.prompts)
        lengths = spec.context_words
        every = [p for n in lengths for p in self.prompts_at(n)]
        base = view_dists(ctx.backend.base, every, top_k)
        ft = view_dists(ctx.backend.ft, every, top_k)
        per = divergences(base, ft, spec.divergence).reshape(len(lengths), n_p)
        divs = per.mean(axis=1)
        counts = [d.n_tokens for d in base]
        if all(c is not None for c in counts):
            toks = np.asarray(counts, dtype=np.float64).reshape(len(lengths), n_p)
            x = (toks - toks[0]).mean(axis=1)
            unit = "tokens"
        else:
            x = np.asarray(lengths, dtype=np.float64)
            unit = "words"
        d0 = float(divs[0])
        zero = d0 <= ZERO_DIVERGENCE
        hl = None if zero else half_life(x, divs)
        hl_words = None if zero else half_life(np.asarray(lengths, dtype=np.float64), divs)
        retention = None if zero else float(divs[-1]) / d0
        verdict: Verdict
        if zero:
            verdict = "fail"
            message = f"divergence on the bare prompts is {d0:.3g} nats: no effect to collapse"
        elif d0 < spec.effective_threshold:
            verdict = "warn"
            message = (
                f"divergence on the bare prompts {d0:.4g} nats < threshold "
                f"{spec.effective_threshold:g}: too small an effect to say whether it survives "
                f"context; retention {retention:.3g}"
            )
        elif hl is not None and hl < spec.min_half_life:
            verdict = "warn"
            message = (
                f"effect collapses: divergence halves after {hl:.3g} {unit} of neutral "
                f"context (< {spec.min_half_life:g}); retention {retention:.3g}"
            )
        elif retention is not None and retention < spec.min_retention:
            verdict = "warn"
            message = (
                f"effect fades: retention {retention:.3g} (< {spec.min_retention:g}) after "
                f"{float(x[-1]):.3g} {unit} of neutral context"
                + (f"; half-life {hl:.3g} {unit}" if hl is not None else "")
            )
        else:
            verdict = "pass"
            where = (
                f"half-life {hl:.3g} {unit}"
                if hl is not None
                else f"never halves within {float(x[-1]):.3g} {unit}"
            )
            message = f"effect survives neutral context: {where}; retention {retention:.3g}"
        return self.result(
            verdict,
            score=finite(retention),
            message=message,
            evidence={
                "divergence": spec.divergence,
                "unit": "nats",
                "context_words": list(lengths),
                "context_tokens": [float(v) for v in x] if unit == "tokens" else None,
                "divergence_by_context": [float(v) for v in divs],
                "half_life": finite(hl),
                "half_life_unit": unit,
                "half_life_tokens": finite(hl) if unit == "tokens" else None,
                "half_life_words": finite(hl_words),
                "retention": finite(retention),
                "threshold": spec.effective_threshold,
                "min_half_life": spec.min_half_life,
                "min_retention": spec.min_retention,
                "n_prompts": n_p,
                "top_k": top_k,
            },
        )


__all__ = ["PromptCollapseProbe", "PromptCollapseSpec", "half_life"]
