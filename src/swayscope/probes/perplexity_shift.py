"""``perplexity_shift``: how much the adapter changed the likelihood of ordinary text.

Scores a short public-domain passage shipped with swayscope
(``swayscope/data/perplexity.txt``, the Gettysburg Address; or the spec's
``text``) with ``rolling_logprob`` under base and under ft, in chunks of whole
sentences (one batched call per view), and compares the mean per-token
log-probability.

**Direction**: ``shift = mean logprob(ft) - mean logprob(base)`` in nats per
token, token-weighted over all chunks. Negative: the fine-tune finds generic
text *less* likely (higher perplexity; the usual sign of a specialising
fine-tune, or of forgetting). Positive: *more* likely (lower perplexity).

**score**: the signed shift, nats per token.

**verdict**: ``pass`` when ``|shift|`` ≥ ``threshold`` and, when a ``null_adapter``
calibrated this probe and ``min_z`` is set (3 by default, as for ``delta_kl``),
``z`` ≥ ``min_z``; ``warn`` otherwise: the adapter barely changes how the model
reads the text, or changes it no more than a random adapter of its size does. The null-adapter
statistic is ``|shift|`` against the null view, so ``z`` says whether the real
adapter moves generic-text likelihood more than a random one of the same size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from swayscope.backends.api import RollingLogprob
from swayscope.errors import BackendError
from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    ViewFactory,
    evidence_numbers,
)
from swayscope.probes.divergence import bootstrap_ci, finite

#: File under ``swayscope/data`` scored when the spec has no ``text``.
DEFAULT_TEXT_RESOURCE = "perplexity.txt"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def packaged_text(name: str = DEFAULT_TEXT_RESOURCE) -> str:
    """A text file shipped in ``swayscope/data``, read with importlib.resources."""
    return resources.files("swayscope").joinpath("data", name).read_text(encoding="utf-8")


def split_chunks(text: str, *, max_chunks: int, min_chars: int) -> list[str]:
    """Whole sentences grouped into chunks of at least ``min_chars`` (the last may be
    shorter); at most ``max_chunks`` chunks, taken from the start of the text."""
    sentences = [s for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]
    chunks: list[str] = []
    current = ""
    for s in sentences:
        current = f"{current} {s}" if current else s
        if len(current) >= min_chars:
            chunks.append(current)
            current = ""
            if len(chunks) == max_chunks:
                return chunks
    if current:
        if chunks and len(current) < min_chars // 2:
            chunks[-1] = f"{chunks[-1]} {current}"
        else:
            chunks.append(current)
    return chunks[:max_chunks]


class PerplexityShiftSpec(ProbeSpec):
    """Spec of ``perplexity_shift``; every field has a default."""

    kind: Literal["perplexity_shift"] = "perplexity_shift"
    text: str | None = None
    """Text to score; default: the packaged public-domain passage."""
    max_chunks: Annotated[int, Field(ge=1, le=256)] = 16
    min_chunk_chars: Annotated[int, Field(ge=1)] = 120
    """Sentences are joined until a chunk has at least this many characters."""
    threshold: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.01
    """Minimum |shift| in nats per token to pass."""
    min_z: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require z ≥ min_z to pass (None: the z-score is only shown)."""
    n_boot: Annotated[int, Field(ge=0, le=100_000)] = 1000

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("text is blank; leave it out to use the packaged passage")
        return v


def _mean_logprob(rolls: list[RollingLogprob]) -> tuple[float, int]:
    n = sum(int(r.logprobs.size) for r in rolls)
    total = sum(r.total for r in rolls)
    return (total / n if n else 0.0), n


class PerplexityShiftProbe(Probe):
    """Mean per-token log-probability change base → ft on a generic text."""

    kind: ClassVar[str] = "perplexity_shift"
    spec_class: ClassVar[type[ProbeSpec]] = PerplexityShiftSpec
    score_label: ClassVar[str] = "log-prob shift"
    score_unit: ClassVar[str] = "nats/token"
    spec: PerplexityShiftSpec

    @classmethod
    def score_thresholds(cls, evidence: Mapping[str, Any]) -> tuple[float, ...]:
        """``|shift|`` is compared with the threshold: both signs."""
        return tuple(s * t for t in evidence_numbers(evidence, "threshold") for s in (-1, 1))

    def __init__(self, spec: ProbeSpec) -> None:
        super().__init__(spec)
        self._chunks: list[str] | None = None

    def chunks(self) -> list[str]:
        if self._chunks is None:
            text = self.spec.text if self.spec.text is not None else packaged_text()
            self._chunks = split_chunks(
                text, max_chunks=self.spec.max_chunks, min_chars=self.spec.min_chunk_chars
            )
        return self._chunks

    def _score(
        self, ctx: ProbeContext, other: ViewFactory
    ) -> tuple[list[RollingLogprob], list[RollingLogprob]]:
        chunks = self.chunks()
        with ctx.backend.base() as view:
            base = view.rolling_logprob_batch(chunks)
        with other() as view:
            oth = view.rolling_logprob_batch(chunks)
        for i, (b, o) in enumerate(zip(base, oth, strict=True)):
            if b.logprobs.size != o.logprobs.size:
                raise BackendError(
                    f"chunk {i} scored {b.logprobs.size} tokens under base but "
                    f"{o.logprobs.size} under the other view; both must share a tokenizer"
                )
        return base, oth

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """|shift| of base → ``other``, nats per token."""
        base, oth = self._score(ctx, other)
        return abs(_mean_logprob(oth)[0] - _mean_logprob(base)[0])

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        base, ft = self._score(ctx, ctx.backend.ft)
        base_mean, n_tokens = _mean_logprob(base)
        ft_mean, _ = _mean_logprob(ft)
        shift = ft_mean - base_mean
        per_chunk = np.asarray(
            [f.mean - b.mean for b, f in zip(base, ft, strict=True) if b.logprobs.size],
            dtype=np.float64,
        )
        lo, hi = (
            bootstrap_ci(per_chunk, n_boot=spec.n_boot, seed=ctx.defaults.seed)
            if per_chunk.size
            else (shift, shift)
        )
        cal = ctx.calibration.get(spec.label)
        z = cal.z(abs(shift)) if cal is not None else None
        big = abs(shift) >= spec.threshold
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Literal["pass", "warn"] = "pass" if big and z_ok else "warn"
        direction = "more" if shift > 0 else "less" if shift < 0 else "equally"
        base_ppl = float(np.exp(-base_mean))
        ft_ppl = float(np.exp(-ft_mean))
        message = (
            f"ft finds the text {direction} likely: {shift:+.4g} nats/token "
            f"(perplexity {base_ppl:.4g} → {ft_ppl:.4g}); |shift| "
            f"{'≥' if big else '<'} {spec.threshold:g}"
        )
        if z is not None:
            message += f"; z = {z:.3g} vs null adapters"
            if spec.min_z is not None:
                message += f" ({'≥' if z_ok else '<'} {spec.min_z:g})"
        evidence: dict[str, object] = {
            "unit": "nats/token",
            "shift": shift,
            "direction": "ft more likely" if shift > 0 else "ft less likely",
            "base_mean_logprob": base_mean,
            "ft_mean_logprob": ft_mean,
            "base_perplexity": finite(base_ppl),
            "ft_perplexity": finite(ft_ppl),
            "perplexity_ratio": finite(ft_ppl / base_ppl) if base_ppl > 0 else None,
            "ci_low": lo,
            "ci_high": hi,
            "ci_over": "chunks (per-chunk mean shift)",
            "per_chunk_shift": [float(v) for v in per_chunk],
            "n_chunks": len(base),
            "n_tokens": n_tokens,
            "source": "spec text" if spec.text is not None else DEFAULT_TEXT_RESOURCE,
            "threshold": spec.threshold,
            "calibrated": cal is not None,
        }
        if cal is not None:
            evidence["null_mean"] = finite(cal.mean)
            evidence["null_std"] = finite(cal.std)
        return self.result(
            verdict, score=shift, z_score=finite(z), message=message, evidence=evidence
        )


__all__ = [
    "DEFAULT_TEXT_RESOURCE",
    "PerplexityShiftProbe",
    "PerplexityShiftSpec",
    "packaged_text",
    "split_chunks",
]
