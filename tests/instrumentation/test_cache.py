"""ForwardCache byte accounting: exact after overwrites, evictions and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from swayscope.instrumentation.cache import ForwardCache, measure_bytes


def test_overwriting_a_key_keeps_nbytes_exact() -> None:
    cache = ForwardCache(maxsize=8)
    small, large = np.zeros(4), np.zeros(400)
    cache.put(("k",), small)
    cache.put(("other",), small.copy())
    assert cache.nbytes == 2 * measure_bytes(small)
    cache.put(("k",), large)
    assert cache.nbytes == measure_bytes(small) + measure_bytes(large)
    cache.put(("k",), small.copy())
    assert cache.nbytes == 2 * measure_bytes(small)
    assert len(cache) == 2 and cache.evictions == 0


def test_overwrite_with_a_value_over_the_byte_budget_drops_the_old_one_exactly() -> None:
    small = np.zeros(4)
    cache = ForwardCache(maxsize=8, max_bytes=measure_bytes(small) * 3)
    cache.put(("k",), small)
    cache.put(("j",), small.copy())
    cache.put(("k",), np.zeros(10_000))  # too big to store at all
    assert ("k",) not in cache
    assert cache.nbytes == measure_bytes(small) and len(cache) == 1
    assert cache.evictions == 1


def test_prompts_sharing_a_short_hash_never_share_a_cache_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache keys on the full digest: a display-hash collision (forced here by cutting
    the display hash to 5 hex digits and searching a pair) cannot serve one prompt's
    result for another."""
    import swayscope.instrumentation.hashing as hashing
    from swayscope.instrumentation import BackendInstrumentation

    monkeypatch.setattr(hashing, "PROMPT_HASH_CHARS", 5)
    seen: dict[str, str] = {}
    pair = None
    for i in range(1_000_000):
        text = f"prompt {i}"
        short = hashing.prompt_hash(text)
        if short in seen:
            pair = (seen[short], text)
            break
        seen[short] = text
    assert pair is not None
    inst = BackendInstrumentation()
    assert inst.hash_prompt(pair[0]) == inst.hash_prompt(pair[1])
    a = inst.cached("next_token_dist", "base", pair[0], 8, lambda: "A")
    b = inst.cached("next_token_dist", "base", pair[1], 8, lambda: "B")
    assert (a, b) == ("A", "B")
    assert inst.stats.cache_misses == 2 and inst.stats.cache_hits == 0
    batch = inst.cached_batch("next_token_dist", "ft", list(pair), 8, lambda idx: list(idx))
    assert batch == [0, 1]
