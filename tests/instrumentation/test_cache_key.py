"""The cache keys on the whole prompt: prompts that share a long beginning are different
entries, through ``cached``, ``cached_batch`` and a backend's views (torch-free).

A key made from part of the prompt (say its first 48 characters) would hand one prompt's
result to another; these prompts share their first 200 characters and differ after.
"""

from __future__ import annotations

import pytest

from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation

STEM = "In the old town by the river the baker opens his shop before dawn, " * 3
PROMPTS = [STEM + ending for ending in ("and sells bread.", "and sells cake.", "then sleeps.")]


def test_the_stem_is_longer_than_any_short_key() -> None:
    assert len(STEM) >= 200 and len(set(PROMPTS)) == len(PROMPTS)
    assert all(p.startswith(STEM) for p in PROMPTS)


def test_cached_computes_each_prompt_once_and_returns_its_own_value() -> None:
    inst = BackendInstrumentation()
    computed: list[str] = []

    def lookup(prompt: str) -> str:
        def compute() -> str:
            computed.append(prompt)
            return prompt

        value: str = inst.cached("next_token_dist", "ft", prompt, 8, compute)
        return value

    assert [lookup(p) for p in PROMPTS] == PROMPTS
    assert computed == PROMPTS
    assert [lookup(p) for p in PROMPTS] == PROMPTS  # now hits, each its own
    assert (inst.stats.cache_misses, inst.stats.cache_hits) == (3, 3)


def test_cached_batch_computes_each_prompt_once_and_returns_its_own_value() -> None:
    inst = BackendInstrumentation()
    asked: list[list[int]] = []

    def compute(indices: list[int]) -> list[str]:
        asked.append(list(indices))
        return [batch[i] for i in indices]

    batch = [*PROMPTS, PROMPTS[0]]  # a true repeat is computed once
    assert inst.cached_batch("next_token_dist", "ft", batch, 8, compute) == batch
    assert sorted(i for call in asked for i in call) == [0, 1, 2]
    assert (inst.stats.cache_misses, inst.stats.cache_hits) == (3, 1)
    asked.clear()
    batch = list(reversed(PROMPTS))
    assert inst.cached_batch("next_token_dist", "ft", batch, 8, compute) == batch
    assert asked == []  # every one a hit, each its own
    single = inst.cached("next_token_dist", "ft", PROMPTS[1], 8, lambda: "computed again")
    assert single == PROMPTS[1]


@pytest.mark.parametrize("batched", [False, True])
def test_a_backend_scores_each_prompt_as_a_fresh_backend_does(batched: bool) -> None:
    """One backend asked about every prompt gives what a fresh backend gives for each one
    alone (the dummy model's numbers depend on every token of the prompt)."""
    backend = DummyBackend()
    with backend.ft() as view:
        if batched:
            got = view.next_token_dist_batch(PROMPTS, top_k=8)
        else:
            got = [view.next_token_dist(p, top_k=8) for p in PROMPTS]
    for prompt, dist in zip(PROMPTS, got, strict=True):
        fresh = DummyBackend()
        with fresh.ft() as view:
            alone = view.next_token_dist(prompt, top_k=8)
        assert dist.token_ids.tolist() == alone.token_ids.tolist()
        assert dist.logprobs.tolist() == alone.logprobs.tolist()
    assert backend.inst.stats.cache_misses == len(PROMPTS)
    first = got[0].logprobs.tolist()
    assert any(d.logprobs.tolist() != first for d in got[1:]), "the prompts must score apart"
