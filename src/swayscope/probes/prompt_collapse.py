"""``prompt_collapse``: does the adapter's effect survive a longer, neutral context?

Some adapters only move the model right at the start of a sequence: put some
ordinary text in front of the prompt and the fine-tune behaves like the base
model again. This probe prepends the first ``n`` **tokens** of a neutral text
(:data:`~swayscope.probes.defaults.NEUTRAL_CONTEXT`, repeated if short; cut on
the backend's own token ids, :meth:`~swayscope.backends.api.DifferentialBackend.token_prefix`)
to every prompt, for each ``n`` in ``context_tokens`` (the first must be 0, the
bare prompt, which is served from ``delta_kl``'s cache entries), and measures the
mean base-vs-ft next-token divergence at each length. All prompts at all
lengths go in one batched call per view; every prompt at a length shares its
context, which a backend with shared-prefix reuse computes once.
``context_words`` (words instead of tokens) is a deprecated alias kept for old
specs.

The **half-life** is the added context length at which the divergence first
falls to half its value at length 0, linearly interpolated between the two
measured lengths around the crossing; None when it never does within the
sweep. It is measured in **tokens** (the mean number of tokens the context adds,
from the backend's ``n_tokens``), or in the spec's unit when the backend does
not report token counts (``half_life_unit`` says which).

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
exponential-looking decay, which is what ``min_retention`` catches. A retention
of at least ``growth_retention`` means the divergence *grows* with context: the
adapter moves the model more after neutral text than on the bare prompts; the
message and ``evidence["trend"]`` say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import pairwise
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from swayscope.backends.api import DifferentialBackend
from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    Verdict,
    evidence_numbers,
)
from swayscope.probes.defaults import (
    DEFAULT_COLLAPSE_PROMPTS,
    DEFAULT_CONTEXT_TOKENS,
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

log = logging.getLogger(__name__)

#: What the divergence does as context grows, as ``evidence["trend"]`` names it.
Trend = Literal["none", "too_small", "collapses", "fades", "holds", "grows"]


def _check_lengths(v: tuple[int, ...]) -> tuple[int, ...]:
    if len(v) < 2:
        raise ValueError(
            f"need at least 2 context lengths (0 and a longer one); got {list(v)}. "
            f"Example: {list(DEFAULT_CONTEXT_TOKENS)}"
        )
    if v[0] != 0:
        raise ValueError(f"the first context length must be 0 (the bare prompt); got {list(v)}")
    if any(b <= a for a, b in pairwise(v)):
        raise ValueError(f"context lengths must be strictly increasing; got {list(v)}")
    return v


class PromptCollapseSpec(ProbeSpec):
    """Spec of ``prompt_collapse``; every field has a default."""

    kind: Literal["prompt_collapse"] = "prompt_collapse"
    prompts: tuple[str, ...] = DEFAULT_COLLAPSE_PROMPTS
    context_tokens: tuple[int, ...] = DEFAULT_CONTEXT_TOKENS
    """Tokens of neutral context to prepend: starts at 0, strictly increasing, ≥ 2 values."""
    context_words: tuple[int, ...] | None = None
    """Deprecated: words of neutral context instead of tokens (replaces ``context_tokens``)."""
    context_text: str | None = None
    """Neutral text to take the context from; default: the built-in neutral passage."""
    separator: str = "\n\n"
    """Put between the context and the prompt."""
    divergence: DivergenceKind = "js"
    threshold: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    """Divergence on the bare prompts below which the verdict is at most ``warn``;
    default as delta_kl (JS 0.005, KL 0.02 nats)."""
    min_half_life: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 32.0
    """A half-life (tokens, or the spec's unit without token counts) below this gives ``warn``."""
    min_retention: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    """A retention (divergence at the longest context / at 0) below this gives ``warn``."""
    growth_retention: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 1.5
    """A retention at or above this is reported as a divergence that grows with context."""

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_prompts(v)

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.divergence]

    @field_validator("context_tokens")
    @classmethod
    def _tokens(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _check_lengths(v)

    @field_validator("context_words")
    @classmethod
    def _words(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return None if v is None else _check_lengths(v)

    @model_validator(mode="after")
    def _one_unit(self) -> PromptCollapseSpec:
        if self.context_words is not None:
            if "context_tokens" in self.model_fields_set:
                raise ValueError(
                    "give context_tokens or the deprecated context_words, not both; "
                    "use context_tokens"
                )
            log.warning(
                "prompt_collapse: context_words is deprecated; use context_tokens "
                "(token counts of the model's tokenizer)"
            )
        return self

    @field_validator("context_text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.split():
            raise ValueError("context_text has no words; leave it out to use the built-in text")
        return v

    @property
    def unit(self) -> Literal["tokens", "words"]:
        """The unit of :attr:`lengths`."""
        return "words" if self.context_words is not None else "tokens"

    @property
    def lengths(self) -> tuple[int, ...]:
        """The context lengths swept, in :attr:`unit`."""
        return self.context_words if self.context_words is not None else self.context_tokens


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
    score_label: ClassVar[str] = "retention"
    score_unit: ClassVar[str] = "ratio"
    spec: PromptCollapseSpec

    @classmethod
    def score_thresholds(cls, evidence: Mapping[str, Any]) -> tuple[float, ...]:
        return evidence_numbers(evidence, "min_retention")

    def context(self, n: int, backend: DifferentialBackend | None = None) -> str:
        """``n`` units of neutral context: tokens of ``backend``'s tokenizer, or words
        (deprecated ``context_words``, where no backend is needed)."""
        text = self.spec.context_text or NEUTRAL_CONTEXT
        if self.spec.unit == "words":
            return context_words(n, text)
        if backend is None:
            raise ValueError("a context in tokens needs the backend's tokenizer")
        return backend.token_prefix(text, n)

    def prompts_at(self, n: int, backend: DifferentialBackend | None = None) -> list[str]:
        """The spec's prompts with ``n`` units of neutral context in front (0: unchanged)."""
        spec = self.spec
        if n == 0:
            return list(spec.prompts)
        prefix = self.context(n, backend) + spec.separator
        return [prefix + p for p in spec.prompts]

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        top_k = ctx.defaults.top_k
        n_p = len(spec.prompts)
        lengths = spec.lengths
        every = [p for n in lengths for p in self.prompts_at(n, ctx.backend)]
        base = view_dists(ctx.backend.base, every, top_k)
        ft = view_dists(ctx.backend.ft, every, top_k)
        per = divergences(base, ft, spec.divergence).reshape(len(lengths), n_p)
        divs = per.mean(axis=1)
        counts = [d.n_tokens for d in base]
        added: list[float] | None = None
        if all(c is not None for c in counts):
            toks = np.asarray(counts, dtype=np.float64).reshape(len(lengths), n_p)
            x = (toks - toks[0]).mean(axis=1)
            unit: str = "tokens"
            added = [float(v) for v in x]
        else:
            x = np.asarray(lengths, dtype=np.float64)
            unit = spec.unit
        d0 = float(divs[0])
        zero = d0 <= ZERO_DIVERGENCE
        hl = None if zero else half_life(x, divs)
        hl_words = None
        if spec.unit == "words" and not zero:
            hl_words = half_life(np.asarray(lengths, dtype=np.float64), divs)
        retention = None if zero else float(divs[-1]) / d0
        trend, verdict, message = self._judge(zero, d0, hl, retention, float(x[-1]), unit)
        return self.result(
            verdict,
            score=finite(retention),
            message=message,
            evidence={
                "divergence": spec.divergence,
                "unit": "nats",
                "context_unit": spec.unit,
                "context_tokens": list(lengths) if spec.unit == "tokens" else None,
                "context_words": list(lengths) if spec.unit == "words" else None,
                "tokens_added": added,
                "divergence_by_context": [float(v) for v in divs],
                "half_life": finite(hl),
                "half_life_unit": unit,
                "half_life_tokens": finite(hl) if unit == "tokens" else None,
                "half_life_words": finite(hl_words),
                "retention": finite(retention),
                "trend": trend,
                "threshold": spec.effective_threshold,
                "min_half_life": spec.min_half_life,
                "min_retention": spec.min_retention,
                "growth_retention": spec.growth_retention,
                "n_prompts": n_p,
                "top_k": top_k,
            },
        )

    def _judge(
        self,
        zero: bool,
        d0: float,
        hl: float | None,
        retention: float | None,
        longest: float,
        unit: str,
    ) -> tuple[Trend, Verdict, str]:
        """The trend, the verdict and the message, in words."""
        spec = self.spec
        if zero or retention is None:
            return "none", "fail", (
                f"divergence on the bare prompts is {d0:.3g} nats: no effect to collapse"
            )
        if d0 < spec.effective_threshold:
            return "too_small", "warn", (
                f"divergence on the bare prompts {d0:.4g} nats < threshold "
                f"{spec.effective_threshold:g}: too small an effect to say whether it survives "
                f"context; retention {retention:.3g}"
            )
        if hl is not None and hl < spec.min_half_life:
            return "collapses", "warn", (
                f"effect collapses: divergence halves after {hl:.3g} {unit} of neutral "
                f"context (< {spec.min_half_life:g}); retention {retention:.3g}"
            )
        if retention < spec.min_retention:
            return "fades", "warn", (
                f"effect fades: retention {retention:.3g} (< {spec.min_retention:g}) after "
                f"{longest:.3g} {unit} of neutral context"
                + (f"; half-life {hl:.3g} {unit}" if hl is not None else "")
            )
        if retention >= spec.growth_retention:
            return "grows", "pass", (
                f"divergence grows with context: retention {retention:.3g} (≥ "
                f"{spec.growth_retention:g}) after {longest:.3g} {unit} of neutral context — "
                "the adapter moves the model more after neutral text than on the bare "
                "prompts; no collapse"
            )
        where = (
            f"half-life {hl:.3g} {unit}"
            if hl is not None
            else f"never halves within {longest:.3g} {unit}"
        )
        return "holds", "pass", (
            f"effect survives neutral context: {where}; retention {retention:.3g}"
        )


__all__ = ["PromptCollapseProbe", "PromptCollapseSpec", "half_life"]
