"""Divergence math over truncated distributions, and the seeded bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swayscope.backends.api import TokenDist
from swayscope.backends.dummy import DummyBackend
from swayscope.errors import InputError
from swayscope.probes.defaults import DEFAULT_PROMPTS
from swayscope.probes.divergence import (
    LN2,
    aligned,
    bootstrap_ci,
    divergence,
    divergences,
    finite,
    js_divergence,
    kl_divergence,
    view_dists,
)


def dist_from_probs(probs: np.ndarray, top_k: int) -> TokenDist:
    """A TokenDist truncated to ``top_k``, built from a full probability vector."""
    order = np.argsort(-probs, kind="stable")
    top = order[:top_k]
    tail = float(probs[order[top_k:]].sum())
    return TokenDist(
        token_ids=top.astype(np.int64),
        logprobs=np.log(probs[top]),
        vocab_size=probs.size,
        tail_logprob=math.log(tail) if tail > 0 else -math.inf,
    )


def random_probs(rng: np.random.Generator, v: int = 50, scale: float = 2.0) -> np.ndarray:
    logits = rng.normal(0.0, scale, v)
    p: np.ndarray = np.exp(logits - logits.max())
    out: np.ndarray = p / p.sum()
    return out


def exact_js(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m)))


def exact_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def test_identical_distributions_have_zero_divergence() -> None:
    rng = np.random.default_rng(1)
    for k in (5, 20, 50):
        d = dist_from_probs(random_probs(rng), k)
        assert js_divergence(d, d) == pytest.approx(0.0, abs=1e-12)
        assert kl_divergence(d, d) == pytest.approx(0.0, abs=1e-12)


def test_js_symmetric_bounded_and_kl_nonnegative() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        k1, k2 = (int(x) for x in rng.integers(1, 51, size=2))
        p = dist_from_probs(random_probs(rng, scale=float(rng.uniform(0.1, 6))), k1)
        q = dist_from_probs(random_probs(rng, scale=float(rng.uniform(0.1, 6))), k2)
        js_pq, js_qp = js_divergence(p, q), js_divergence(q, p)
        assert js_pq == pytest.approx(js_qp, abs=1e-12)
        assert 0.0 <= js_pq <= LN2
        assert kl_divergence(p, q) >= 0.0
        assert kl_divergence(q, p) >= 0.0


def test_disjoint_point_masses_reach_ln2() -> None:
    v = 10
    a = TokenDist(np.array([0]), np.array([0.0]), v, -math.inf)
    b = TokenDist(np.array([1]), np.array([0.0]), v, -math.inf)
    assert js_divergence(a, b) == pytest.approx(LN2)
    assert math.isfinite(kl_divergence(a, b))  # Q floored, not infinite
    assert kl_divergence(a, b) > 20


def test_full_vocabulary_is_exact() -> None:
    rng = np.random.default_rng(3)
    p, q = random_probs(rng), random_probs(rng)
    dp, dq = dist_from_probs(p, p.size), dist_from_probs(q, q.size)
    assert js_divergence(dp, dq) == pytest.approx(exact_js(p, q), rel=1e-9)
    assert kl_divergence(dp, dq) == pytest.approx(exact_kl(p, q), rel=1e-9)


def test_uniform_tail_is_exact_when_the_tail_is_uniform() -> None:
    """Tail mass really spread evenly: the truncated divergence equals the full one."""
    rng = np.random.default_rng(4)
    v, k = 40, 8
    fulls = []
    for _ in range(2):
        head = rng.uniform(0.05, 0.1, k)
        tail = np.full(v - k, (1 - head.sum()) / (v - k))
        fulls.append(np.concatenate([head, tail])[rng.permutation(v)])
    p, q = fulls
    dp, dq = dist_from_probs(p, k), dist_from_probs(q, k)
    assert js_divergence(dp, dq) == pytest.approx(exact_js(p, q), rel=1e-9)
    assert kl_divergence(dp, dq) == pytest.approx(exact_kl(p, q), rel=1e-9)


def test_truncation_approximates_full_divergence() -> None:
    backend = DummyBackend()
    full_b = view_dists(backend.base, DEFAULT_PROMPTS, 64)
    full_f = view_dists(backend.ft, DEFAULT_PROMPTS, 64)
    exact = divergences(full_b, full_f).mean()
    approx = divergences([d.truncate(16) for d in full_b], [d.truncate(16) for d in full_f])
    assert approx.mean() == pytest.approx(exact, rel=0.15)


def test_aligned_supports_sum_to_one() -> None:
    rng = np.random.default_rng(5)
    p = dist_from_probs(random_probs(rng), 7)
    q = dist_from_probs(random_probs(rng), 13)
    pa, qa = aligned(p, q)
    assert pa.shape == qa.shape
    assert pa.sum() == pytest.approx(1.0)
    assert qa.sum() == pytest.approx(1.0)
    assert (pa >= 0).all() and (qa >= 0).all()


def test_errors() -> None:
    a = TokenDist(np.array([0]), np.array([0.0]), 10, -math.inf)
    b = TokenDist(np.array([0]), np.array([0.0]), 11, -math.inf)
    with pytest.raises(InputError, match="different vocabularies"):
        js_divergence(a, b)
    with pytest.raises(InputError, match="unknown divergence"):
        divergence(a, a, "tv")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="1 base and 2 other"):
        divergences([a], [a, a])


def test_bootstrap_ci_contains_mean_and_is_seeded() -> None:
    values = np.random.default_rng(6).exponential(0.05, 16)
    mean = float(values.mean())
    lo, hi = bootstrap_ci(values, n_boot=1000, seed=7)
    assert lo <= mean <= hi
    assert lo < hi
    assert (lo, hi) == bootstrap_ci(values, n_boot=1000, seed=7)
    assert (lo, hi) != bootstrap_ci(values, n_boot=1000, seed=8)
    lo99, hi99 = bootstrap_ci(values, n_boot=1000, seed=7, confidence=0.99)
    assert lo99 <= lo and hi99 >= hi


def test_bootstrap_edge_cases() -> None:
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.1, 0.3], n_boot=0) == pytest.approx((0.2, 0.2))
    with pytest.raises(InputError):
        bootstrap_ci([])
    with pytest.raises(InputError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


def test_finite() -> None:
    assert finite(None) is None
    assert finite(math.inf) is None
    assert finite(math.nan) is None
    assert finite(np.float64(0.5)) == 0.5
