"""Shared-prefix reuse and the output head where needed, on the tiny model: equal results.

Every test compares a backend that computes shared prefixes once (``call_overhead_tokens=0``:
every shared branch point becomes a prefix) with one that never does
(``prefix_cache_max_bytes=0``), within 1e-4, across ops, view kinds, padding, batch
splits and calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sway_testing import Recorder

from swayscope.backends.api import RollingLogprob, ScoringView, TokenDist
from swayscope.backends.hf import ForwardRecord, HFBackend
from swayscope.backends.hf.model_traits import full_attention_only
from swayscope.backends.hf.prefix import NO_START
from swayscope.backends.tiny import TinyModelPaths
from swayscope.instrumentation import BackendInstrumentation
from swayscope.probes.defaults import NEUTRAL_CONTEXT

TOL = 1e-4
PROMPTS = ["The lamp was lit at", "Fog", "Keeper's log. The wind fell.", "Numbers are useful"]


@pytest.fixture(scope="module")
def pair(tiny_model: TinyModelPaths) -> Iterator[tuple[HFBackend, HFBackend]]:
    """(prefix reuse on, off); each test clears caches and stores first."""
    on = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu",
                   call_overhead_tokens=0)
    off = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu",
                    prefix_cache_max_bytes=0)
    assert on.forward_pass.prefix_reuse and not off.forward_pass.prefix_reuse
    try:
        yield on, off
    finally:
        on.close()
        off.close()


@pytest.fixture
def backends(pair: tuple[HFBackend, HFBackend]) -> tuple[HFBackend, HFBackend]:
    for b in pair:
        b.inst.cache.clear()
        b.forward_pass.store.clear()
        b.limits.max_batch_size, b.limits.max_batch_tokens = 32, 8192
    pair[0].call_overhead_tokens = 0
    return pair


def _texts(b: HFBackend) -> list[str]:
    """Two neutral contexts (the second extends the first), each before every prompt, the
    bare prompts, and two texts whose shared part ends inside a word."""
    short = b.token_prefix(NEUTRAL_CONTEXT, 60)
    long = b.token_prefix(NEUTRAL_CONTEXT, 200)
    word = b.token_prefix(NEUTRAL_CONTEXT, 40)
    return (
        [f"{ctx}\n\n{p}" for ctx in (short, long) for p in PROMPTS]
        + PROMPTS
        + [f"{word} lighthouse", f"{word} lightning"]
    )


def _views(b: HFBackend) -> list[Callable[[], AbstractContextManager[ScoringView]]]:
    return [b.base, b.ft, lambda: b.scaled(0.5), lambda: b.null(3)]


def _close_dists(a: list[TokenDist], b: list[TokenDist]) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.n_tokens == y.n_tokens
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=TOL)
        assert abs(x.tail_logprob - y.tail_logprob) < TOL


def _close_rolls(a: list[RollingLogprob], b: list[RollingLogprob]) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.token_ids, y.token_ids)
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=TOL)


def _every_op(view: ScoringView, texts: list[str], clear: Callable[[], None]) -> list[Any]:
    """Each op, batched and single, on an empty cache (so each one computes)."""
    pairs = [(t[: len(t) - 4], t[len(t) - 4 :]) for t in texts]
    out: list[Any] = []
    for op in (
        lambda: view.next_token_dist_batch(texts, top_k=64),
        lambda: view.rolling_logprob_batch(texts),
        lambda: view.logprob_of_batch(pairs),
        lambda: [view.next_token_dist(t, top_k=64) for t in texts],
        lambda: [view.rolling_logprob(t) for t in texts],
        lambda: [view.logprob_of(p, c) for p, c in pairs],
    ):
        clear()
        out.append(op())
    return out


def _assert_same(a: list[Any], b: list[Any]) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x[0], TokenDist):
            _close_dists(x, y)
        elif isinstance(x[0], RollingLogprob):
            _close_rolls(x, y)
        else:
            np.testing.assert_allclose(x, y, atol=TOL)


def test_every_op_and_view_kind_equals_no_reuse(backends: tuple[HFBackend, HFBackend]) -> None:
    on, off = backends
    texts = _texts(on)
    for view_on, view_off in zip(_views(on), _views(off), strict=True):
        on.forward_pass.store.clear()
        with view_on() as v:
            got = _every_op(v, texts, on.inst.cache.clear)
        with view_off() as v:
            want = _every_op(v, texts, off.inst.cache.clear)
        _assert_same(got, want)
    s = on.inst.stats
    assert s.prefix_tokens_reused > 0 and s.tokens_computed < s.n_tokens
    assert off.inst.stats.tokens_computed == off.inst.stats.n_tokens
    assert off.inst.stats.prefix_tokens_reused == 0


def test_padding_batch_splits_and_mixed_prefixes_in_one_call(
    backends: tuple[HFBackend, HFBackend],
) -> None:
    on, off = backends
    texts = _texts(on)
    with off.ft() as v:
        want = v.rolling_logprob_batch(texts)
    # small calls: the texts and their prefixes are cut into many padded calls
    on.max_batch_size, on.max_batch_tokens = 2, 96
    with on.ft() as v:
        _close_rolls(v.rolling_logprob_batch(texts), want)
    # one big call over texts that start from different stored prefixes (padded, masked)
    on.inst.cache.clear()
    on.max_batch_size, on.max_batch_tokens = 32, 8192
    on.call_overhead_tokens = 10**6
    calls = on.inst.stats.model_invocations
    with on.ft() as v:
        got = v.rolling_logprob_batch(texts)
    assert on.inst.stats.model_invocations == calls + 1
    _close_rolls(got, want)


def test_prefixes_are_reused_across_calls(backends: tuple[HFBackend, HFBackend]) -> None:
    on, off = backends
    texts = _texts(on)
    with on.base() as v:
        v.next_token_dist_batch(texts[:4])  # the short context's prefix is stored
    s = on.inst.stats
    hits, computed, reused = s.prefix_hits, s.tokens_computed, s.prefix_tokens_reused
    later = [t + " again" for t in texts[:4]]
    with on.base() as v:
        got = [v.next_token_dist(t) for t in later]  # one text per call
    with off.base() as v:
        want = [v.next_token_dist(t) for t in later]
    _close_dists(got, want)
    assert s.prefix_hits - hits == len(later)
    total = sum(len(on.tokenize(t)) for t in later)
    assert s.tokens_computed - computed == total - (s.prefix_tokens_reused - reused)
    assert s.tokens_computed - computed < total / 2, "most of each text came from the store"


def test_a_view_never_uses_another_views_prefix(backends: tuple[HFBackend, HFBackend]) -> None:
    on, off = backends
    texts = _texts(on)[:4]
    ids = on.tokenize(texts[0])
    with on.base() as v:
        v.next_token_dist_batch(texts)
    store = on.forward_pass.store
    assert store.best("base", ids, len(ids) - 1, scored=False) != NO_START
    for view_id in ("ft", "scaled_0.5", "null_3_i1.0_r1.0"):
        assert store.best(view_id, ids, len(ids) - 1, scored=False) == NO_START
    hits = on.inst.stats.prefix_hits
    with on.ft() as v:
        got = [v.next_token_dist(t) for t in texts]  # alone: nothing shared within a call
    assert on.inst.stats.prefix_hits == hits, "ft started from base's keys and values"
    with off.ft() as v:
        _close_dists(got, [v.next_token_dist(t) for t in texts])


def test_store_budget_evicts_least_recently_used(tiny_model: TinyModelPaths) -> None:
    small = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu",
                      call_overhead_tokens=0, prefix_cache_max_bytes=120_000)
    off = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu",
                    prefix_cache_max_bytes=0)
    texts = _texts(small)
    with small.ft() as v:
        got = v.rolling_logprob_batch(texts)
    with off.ft() as v:
        _close_rolls(got, v.rolling_logprob_batch(texts))
    s = small.inst.stats
    assert s.prefix_evictions >= 1
    assert 0 < s.prefix_bytes <= 120_000 and s.prefix_entries == len(small.forward_pass.store)
    assert small.forward_pass.store.nbytes == s.prefix_bytes
    small.close()
    off.close()


def _records(b: HFBackend) -> list[ForwardRecord]:
    stored = [b.inst.cache.get(key) for key in b.inst.cache.keys()]  # noqa: SIM118 (not a dict)
    return [r for r in stored if isinstance(r, ForwardRecord)]


def test_next_token_dist_computes_no_token_scores_until_asked(
    backends: tuple[HFBackend, HFBackend],
) -> None:
    on, off = backends
    texts = _texts(on)
    with on.ft() as v:
        dists = v.next_token_dist_batch(texts, top_k=64)
        assert not any(r.scored for r in _records(on))
        calls = on.inst.stats.forward_calls
        rolls = v.rolling_logprob_batch(texts)  # upgrades the records
        assert on.inst.stats.forward_calls > calls
        assert all(r.scored for r in _records(on)) and len(_records(on)) == len(texts)
        calls = on.inst.stats.forward_calls
        again = v.next_token_dist_batch(texts, top_k=64)
        assert on.inst.stats.forward_calls == calls, "a scored record serves next_token_dist"
    _close_dists(dists, again)
    with off.ft() as v:
        _close_rolls(rolls, v.rolling_logprob_batch(texts))  # off: rolling first, full records
        _close_dists(dists, v.next_token_dist_batch(texts, top_k=64))


def test_forward_calls_say_tokens_computed_and_reused(tiny_model: TinyModelPaths) -> None:
    recorder = Recorder()
    inst = BackendInstrumentation(exporters=[recorder])
    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", inst=inst,
                  call_overhead_tokens=0)
    texts = _texts(b)
    with b.ft() as v:
        v.next_token_dist_batch(texts)
    calls = recorder.calls()
    s = inst.stats
    assert sum(c.n_tokens_computed or 0 for c in calls) == s.tokens_computed
    assert sum(c.n_tokens_reused or 0 for c in calls) == s.prefix_tokens_reused > 0
    for c in calls:
        assert c.n_tokens is not None and c.n_tokens_computed is not None
        assert c.n_tokens_reused is not None
        assert c.n_tokens_computed <= c.n_tokens
    b.close()


def test_prefix_reuse_needs_full_attention() -> None:
    class Config:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    assert full_attention_only(Config())
    assert full_attention_only(Config(layer_types=["full_attention"] * 2, sliding_window=None))
    assert not full_attention_only(Config(layer_types=["full_attention", "sliding_attention"]))
    assert not full_attention_only(Config(sliding_window=4096))
    assert full_attention_only(Config(sliding_window=4096, use_sliding_window=False))
    assert not full_attention_only(Config(layer_types=["linear_attention"]))


def test_token_prefix_cuts_on_token_ids(backends: tuple[HFBackend, HFBackend]) -> None:
    b = backends[0]
    bare = len(b.tokenize("x")) - 1  # the special tokens the tokenizer adds (BOS)
    for n in (1, 17, 60):
        cut = b.token_prefix(NEUTRAL_CONTEXT, n)
        assert NEUTRAL_CONTEXT.startswith(cut)
        assert len(b.tokenize(cut)) - bare == n
    total = len(b.tokenize(NEUTRAL_CONTEXT)) - bare
    cycled = b.token_prefix(NEUTRAL_CONTEXT, total + 30)  # longer than the text: repeated
    assert cycled.startswith(NEUTRAL_CONTEXT + " ")
    assert len(b.tokenize(cycled)) - bare == total + 30
    assert b.token_prefix(NEUTRAL_CONTEXT, 0) == ""
