"""Shared-prefix planning and the prefix store, without a model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from swayscope.backends.hf.planner import sharing_groups
from swayscope.backends.hf.prefix import (
    NO_START,
    PrefixEntry,
    PrefixStore,
    Start,
    plan_prefixes,
    shared_length,
    usable_length,
)
from swayscope.instrumentation import BackendInstrumentation


def _nothing_stored(_ids: object, _limit: int) -> Start:
    return NO_START


def _entry(key: list[int], nbytes: int = 100, scored: bool = True) -> PrefixEntry:
    logprobs = np.zeros(len(key) - 1) if scored else None
    return PrefixEntry(tuple(key), [], logprobs, nbytes)


def test_shared_and_usable_lengths() -> None:
    assert shared_length([1, 2, 3], [1, 2, 4]) == 2
    assert shared_length([1, 2], [1, 2, 3]) == 2
    assert shared_length([], [1]) == 0 and shared_length([5], [6]) == 0
    entry = _entry([1, 2, 3, 4, 5])  # keys and values of 4 positions
    assert usable_length(entry, [1, 2, 3, 4, 5, 6, 7], 6) == 4  # the whole entry
    assert usable_length(entry, [1, 2, 3, 9, 9], 4) == 2  # shares 3 tokens: 2 positions
    assert usable_length(entry, [1, 2, 3, 4, 5], 4) == 4  # the text is the key: 1 token left
    assert usable_length(entry, [1, 2, 3, 4, 5, 6], 2) == 2  # capped by the caller
    assert usable_length(entry, [7, 2, 3], 2) == 0


def test_plan_computes_each_worthwhile_branch_once() -> None:
    ctx = list(range(100, 140))  # 40 shared tokens
    longer = ctx + list(range(200, 240))  # 80 shared by the second group
    texts = [[*ctx, 1, 2], [*ctx, 3], [*longer, 4], [*longer, 5, 6], [7, 8, 9]]
    plan = plan_prefixes(texts, _nothing_stored, min_saving=10)
    assert [n.length for n in plan.nodes] == [39, 79]
    outer, inner = plan.nodes
    assert inner.parent is outer and outer.parent is None
    assert plan.node_of[:4] == [outer, outer, inner, inner] and plan.node_of[4] is None
    assert outer.users == [0, 1] and inner.users == [2, 3]
    assert [plan.used(i) for i in range(5)] == [39, 39, 79, 79, 0]


def test_plan_skips_branches_that_save_less_than_a_call() -> None:
    texts = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]
    assert plan_prefixes(texts, _nothing_stored, min_saving=4).nodes == []  # saves 4
    assert len(plan_prefixes(texts, _nothing_stored, min_saving=3).nodes) == 1


def test_plan_starts_from_the_store_and_builds_only_what_it_lacks() -> None:
    ctx = list(range(100, 160))
    stored = _entry(ctx[:31])  # 30 positions of the shared 60 already stored

    def lookup(ids: object, limit: int) -> Start:
        assert isinstance(ids, (list, tuple))
        return Start(stored, usable_length(stored, ids, limit))

    texts = [[*ctx, 1], [*ctx, 2], [*ctx, 3]]
    plan = plan_prefixes(texts, lookup, min_saving=10)
    (node,) = plan.nodes
    assert node.parent is None and node.start.entry is stored and node.start.used == 30
    # a single text starts from the store directly
    alone = plan_prefixes([[*ctx, 9]], lookup, min_saving=10)
    assert alone.nodes == [] and alone.start_of[0].used == 30


def test_plan_drops_prefixes_nobody_uses() -> None:
    ctx = list(range(100, 150))
    whole = _entry([*ctx, 1, 2, 3])  # the store holds more than any node would give

    def lookup(ids: object, limit: int) -> Start:
        assert isinstance(ids, (list, tuple))
        return Start(whole, usable_length(whole, ids, limit))

    plan = plan_prefixes([[*ctx, 1, 2, 3, 4], [*ctx, 1, 2, 3, 5]], lookup, min_saving=1)
    assert plan.nodes == []
    assert all(s.entry is whole for s in plan.start_of)


def test_store_is_per_view_bounded_and_reports_what_it_did() -> None:
    inst = BackendInstrumentation()
    stats = inst.stats
    store = PrefixStore(250, inst.report)
    a, b, c = _entry([1, 2, 3]), _entry([1, 2, 4, 5]), _entry([9, 9, 9], scored=False)
    store.put("base", a)
    store.put("ft", b)
    assert store.best("base", [1, 2, 4, 5, 6], 4, scored=True).entry is a  # not ft's longer one
    assert store.best("ft", [1, 2, 4, 5, 6], 4, scored=True) == Start(b, 3)
    assert store.best("null_1_i1.0_r1.0", [1, 2, 3, 4], 3, scored=False) == NO_START
    store.put("base", c)  # 300 bytes > 250: the least recently used (a) goes
    assert stats.prefix_evictions == 1 and len(store) == 2 and store.nbytes == 200
    assert stats.prefix_entries == 2 and stats.prefix_bytes == 200
    assert store.best("base", [9, 9, 9, 9], 3, scored=True) == NO_START  # c has no scores
    assert store.best("base", [9, 9, 9, 9], 3, scored=False) == Start(c, 2)
    store.touch("ft", b)
    store.put("base", _entry([5, 5, 5]))  # evicts c, not the just-used b
    assert store.best("ft", [1, 2, 4, 5], 3, scored=True).entry is b
    store.put("base", _entry([6, 6], nbytes=251))  # larger than the budget: not kept
    assert len(store) == 2
    assert not PrefixStore(0, inst.report).enabled


def test_sharing_groups_keep_a_prefix_and_its_texts_together() -> None:
    ctx = list(range(100, 160))
    ids = {0: [*ctx, 1], 1: [5, 6, 7], 2: [*ctx, 2, 3], 3: [*ctx, 4], 4: [8, 9]}
    groups, alone = sharing_groups(ids, min_saving=10, max_batch_tokens=8192)
    assert groups == [[0, 2, 3]] and sorted(alone) == [1, 4]
    # a group larger than the budget is cut in token order; the store carries the prefix
    groups, _ = sharing_groups(ids, min_saving=10, max_batch_tokens=62)
    assert [len(g) for g in groups] == [1, 1, 1]
