"""How a call's texts are split across workers: each text once, balanced by tokens, a shared
prefix kept together unless cutting it balances the pool, the same prefix at the same home."""

from __future__ import annotations

import random

import pytest

from swayscope.backends.ray.split import AFFINITY_TOKENS, ranked_workers, split_batch


def _batch(seed: int, n: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, 1000) for _ in range(rng.randrange(4, 60))] for _ in range(n)]


@pytest.mark.parametrize("workers", [[0], [0, 1], [0, 1, 2], [3, 5]])
def test_every_text_goes_to_exactly_one_worker(workers: list[int]) -> None:
    batch = _batch(1, 37)
    parts = split_batch(batch, workers, "ft")
    seen = sorted(i for p in parts for i in p.indices)
    assert seen == list(range(len(batch)))
    assert {p.worker for p in parts} <= set(workers)
    assert all(p.indices == sorted(p.indices) for p in parts)


def test_unrelated_texts_are_balanced_by_tokens() -> None:
    batch = _batch(2, 64)
    parts = split_batch(batch, [0, 1], "base")
    loads = sorted(sum(len(batch[i]) for i in p.indices) for p in parts)
    assert len(parts) == 2 and loads[1] <= 1.25 * loads[0], loads


def test_a_shared_prefix_is_cut_only_into_pieces_that_each_pay_it_once() -> None:
    prefix = list(range(1, 41))
    batch = [[*prefix, 100 + i, 200 + i] for i in range(10)]
    parts = split_batch(batch, [0, 1], "ft")
    assert len(parts) == 2
    # Each piece runs the 40-token prefix once plus its texts' own two tokens.
    assert sorted(p.tokens for p in parts) == [40 + 2 * 5, 40 + 2 * 5]


def test_a_small_group_stays_together_on_its_home_worker() -> None:
    prefix = list(range(1, AFFINITY_TOKENS + 1))
    group = [[*prefix, 500 + i] for i in range(3)]
    others = _batch(3, 30)
    parts = split_batch(group + others, [0, 1], "ft")
    holders = {p.worker for p in parts if set(p.indices) & {0, 1, 2}}
    assert len(holders) == 1
    home = ranked_workers("ft", prefix, [0, 1])[0]
    assert holders == {home}
    # Rendezvous hashing: the home of a key does not move when another worker joins,
    # unless the new worker is now its first choice.
    ranked3 = ranked_workers("ft", prefix, [0, 1, 2])
    assert ranked3[0] in (home, 2)


def test_no_workers_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        split_batch([[1, 2]], [], "ft")
