"""The Ray pool's scores against the independent plain computation, within 1e-5.

The path of ``../test_reference.py`` through a pool of two workers: the driver's cache
and planner, the texts of each call split across the workers (each with its own model
copy, null adapters built there from their seeds, shared prefixes in its own store).
Every view kind and op, batched (in halves, so later calls start from stored prefixes)
and one text at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from reference_scoring import References, ViewCase, every_op, view_cases

if TYPE_CHECKING:
    from swayscope.backends.ray import RayBackend
    from swayscope.backends.tiny import TinyModelPaths


@pytest.fixture(scope="module")
def pool(ray_address: str, tiny_model: TinyModelPaths) -> Iterator[RayBackend]:
    from swayscope.backends.ray import RayBackend

    backend = RayBackend(
        tiny_model.base_dir, tiny_model.adapter_dir, workers=2, device="cpu", threads=1,
        max_top_k=256, call_overhead_tokens=0,
    )
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def references(tiny_model: TinyModelPaths) -> References:
    return References(tiny_model.base_dir, tiny_model.adapter_dir)


CASES = view_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_op_through_the_pool_equals_the_plain_computation(
    case: ViewCase, pool: RayBackend, references: References
) -> None:
    plain = references.plain(case)
    texts_before = sum(c["texts"] for c in pool.pool.counters())
    with case.open(pool) as view:
        assert view.id == case.view_id
        for batched in (True, False):
            every_op(
                view, plain, pool.inst.cache.clear, f"[ray/{case.name}/batched={batched}]",
                batched=batched, halves=batched,
            )
    counters = pool.pool.counters()
    assert sum(c["texts"] for c in counters) > texts_before
    assert all(c["texts"] > 0 for c in counters), counters  # both workers computed
