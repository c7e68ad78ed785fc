"""Divergences between truncated next-token distributions, and a seeded bootstrap.

A :class:`~swayscope.backends.api.TokenDist` only carries its top-k tokens and
the total mass of the rest (``tail_logprob``). Two distributions generally have
different top-k sets, so before comparing them we put both on one common
support:

* one bucket per token id in the **union** of the two top-k id sets, and
* one bucket for **every other token** of the vocabulary.

A token that is in the union but not in a distribution's own top-k gets that
distribution's tail mass spread **uniformly** over the tokens outside its top-k:
``p(t) = tail / (vocab_size - k)``. That is the maximum-entropy assumption
about mass we cannot see, and it is consistent: a token outside the top-k has
probability at most the k-th largest one, and so does the uniform share. The
leftover tail (the part not handed to union tokens) goes to the "rest" bucket.
Under the uniform-tail assumption the rest bucket is exact, not an
approximation: both distributions are uniform over the same set of leftover
tokens, so their per-token ratio is constant and the divergence summed over
those tokens equals the divergence of the two bucket masses.

JS divergence is bounded by ln 2 and always finite. KL(P‖Q) is infinite where
Q has zero mass and P does not (a backend whose top-k covers the vocabulary, or
that reports a zero tail); we floor Q at :data:`KL_FLOOR` so KL stays finite
and comparable across prompts. All values are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from swayscope.backends.api import TokenDist
from swayscope.errors import InputError
from swayscope.probes.base import ViewFactory

DivergenceKind = Literal["js", "kl"]

#: Q's probability floor inside KL(P‖Q): keeps KL finite when Q reports zero mass.
KL_FLOOR = 1e-12

#: A divergence at or below this (nats) counts as "no change at all".
ZERO_DIVERGENCE = 1e-9

LN2 = math.log(2.0)

FloatArray = npt.NDArray[np.float64]


def _expand(d: TokenDist, union: npt.NDArray[np.int64]) -> FloatArray:
    """``d`` as probabilities over ``union`` plus one trailing "rest of vocabulary" bucket."""
    top = np.exp(np.asarray(d.logprobs, dtype=np.float64))
    tail = math.exp(d.tail_logprob) if math.isfinite(d.tail_logprob) else 0.0
    n_out = d.vocab_size - d.top_k
    per_token = tail / n_out if n_out > 0 else 0.0
    out = np.full(union.shape[0] + 1, per_token, dtype=np.float64)
    out[np.searchsorted(union, d.token_ids)] = top
    out[-1] = per_token * (d.vocab_size - union.shape[0])
    total = float(out.sum())
    if not math.isfinite(total) or total <= 0.0:
        raise InputError(
            f"next-token distribution has total mass {total!r}; a backend must return "
            "log-probabilities of a normalised distribution"
        )
    return out / total


def aligned(p: TokenDist, q: TokenDist) -> tuple[FloatArray, FloatArray]:
    """``p`` and ``q`` on one common support (see the module docstring); each sums to 1."""
    if p.vocab_size != q.vocab_size:
        raise InputError(
            f"cannot compare distributions over different vocabularies "
            f"({p.vocab_size} vs {q.vocab_size} tokens); both views must share a tokenizer"
        )
    union = np.union1d(p.token_ids, q.token_ids).astype(np.int64)
    if union.shape[0] > p.vocab_size:
        raise InputError(
            f"token ids outside the vocabulary: {union.shape[0]} distinct ids for a "
            f"vocabulary of {p.vocab_size}"
        )
    return _expand(p, union), _expand(q, union)


def _kl(p: FloatArray, q: FloatArray) -> float:
    mask = p > 0.0
    pm = p[mask]
    return float(np.sum(pm * (np.log(pm) - np.log(np.maximum(q[mask], KL_FLOOR)))))


def kl_divergence(p: TokenDist, q: TokenDist) -> float:
    """KL(P‖Q) in nats, ≥ 0, with Q floored at :data:`KL_FLOOR`."""
    pa, qa = aligned(p, q)
    return max(0.0, _kl(pa, qa))


def js_divergence(p: TokenDist, q: TokenDist) -> float:
    """Jensen-Shannon divergence in nats: symmetric, 0 iff equal, at most ln 2."""
    pa, qa = aligned(p, q)
    m = 0.5 * (pa + qa)
    js = 0.5 * _kl(pa, m) + 0.5 * _kl(qa, m)
    return min(max(js, 0.0), LN2)


def divergence(p: TokenDist, q: TokenDist, kind: DivergenceKind = "js") -> float:
    """``js_divergence`` or ``kl_divergence`` (KL(P‖Q), P = base) by name."""
    if kind == "js":
        return js_divergence(p, q)
    if kind == "kl":
        return kl_divergence(p, q)
    raise InputError(f"unknown divergence {kind!r}; use 'js' or 'kl'")


def divergences(
    base: Sequence[TokenDist], other: Sequence[TokenDist], kind: DivergenceKind = "js"
) -> FloatArray:
    """Per-prompt divergence of ``base[i]`` vs ``other[i]``."""
    if len(base) != len(other):
        raise InputError(f"got {len(base)} base and {len(other)} other distributions")
    return np.asarray([divergence(p, q, kind) for p, q in zip(base, other, strict=True)])


def view_dists(factory: ViewFactory, prompts: Sequence[str], top_k: int) -> list[TokenDist]:
    """Open one view, score every prompt in one batched (cached) call, close the view."""
    with factory() as view:
        return view.next_token_dist_batch(list(prompts), top_k=top_k)


def bootstrap_ci(
    values: Sequence[float] | FloatArray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean; deterministic for a seed.

    Resamples ``values`` with replacement ``n_boot`` times (numpy's PCG64 seeded
    with ``seed``) and returns the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled means, widened if need
    be so the interval always contains the sample mean. With one value (or
    ``n_boot == 0``) the interval is the point ``(mean, mean)``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise InputError("bootstrap_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1); got {confidence!r}")
    mean = float(x.mean())
    if x.size == 1 or n_boot <= 0:
        return mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return min(float(lo), mean), max(float(hi), mean)


def finite(value: float | None) -> float | None:
    """``value`` as a JSON-safe float: None for None, NaN or ±inf."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


__all__ = [
    "KL_FLOOR",
    "LN2",
    "ZERO_DIVERGENCE",
    "DivergenceKind",
    "aligned",
    "bootstrap_ci",
    "divergence",
    "divergences",
    "finite",
    "js_divergence",
    "kl_divergence",
    "view_dists",
]
