"""ForwardCache byte accounting: exact after overwrites, evictions and refusals."""

from __future__ import annotations

import numpy as np

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
