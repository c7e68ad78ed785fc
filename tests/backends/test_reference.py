"""Every score against an independent plain computation, on the tiny model, within 1e-5.

For each view kind (base, ft, scaled with λ = 0, 1, 0.5, 1.5, two null adapters) and each
path a text can take through the backend (alone; batched with padding; shared prefixes
computed once, within a call and from the store, or never; the output head on every
position; batches split by a small budget), each op (``next_token_dist`` at top_k 1, 16
and 256, ``rolling_logprob``, ``logprob_of``) equals what ``reference_scoring`` computes
with transformers and PEFT alone: one unpadded forward per text, ``log_softmax`` over the
full logits. Each op runs on an empty cache, so each one computes. The Ray pool's path is
in ``ray/test_ray_reference.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from reference_scoring import TEXTS, TOP_KS, References, ViewCase, every_op, view_cases

from swayscope.instrumentation import BackendStats

if TYPE_CHECKING:
    from swayscope.backends.hf import HFBackend
    from swayscope.backends.tiny import TinyModelPaths


@dataclass(frozen=True)
class PathCase:
    """A way texts go through the backend: its settings, how ops are called, and what the
    backend's counters must show for the path to have been taken."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    batched: bool = True
    halves: bool = False
    """Batched ops run on the first half of the texts, then on all of them (the second call
    computes the rest, starting from prefixes the first one stored)."""
    packed_head: bool = True
    prefix_reuse: bool = False
    taken: Callable[[BackendStats], bool] = field(kw_only=True)
    """Whether the counters of a test's calls show the path was taken."""


#: Batched ops per path and view: ``next_token_dist`` at each top_k, the other two ops.
BATCH_OPS = len(TOP_KS) + 2

PATHS = [
    PathCase("single", batched=False, prefix_reuse=True,
             taken=lambda s: s.batches_sent == 0 and s.forward_calls == s.cache_misses),
    # One call per op: every text in it, padded to the longest.
    PathCase("batched-padded", {"prefix_cache_max_bytes": 0, "call_overhead_tokens": 10**6},
             taken=lambda s: s.forward_calls == BATCH_OPS and s.max_batch_size >= len(TEXTS)),
    PathCase("prefix-reuse", {"call_overhead_tokens": 0}, halves=True, prefix_reuse=True,
             taken=lambda s: s.prefix_hits > 0 and s.prefix_tokens_reused > 0),
    PathCase("no-prefix-reuse", {"prefix_cache_max_bytes": 0, "call_overhead_tokens": 0},
             halves=True, taken=lambda s: s.prefix_hits == 0 and s.prefix_tokens_reused == 0),
    PathCase("full-head", {"prefix_cache_max_bytes": 0}, packed_head=False,
             taken=lambda s: s.forward_calls >= BATCH_OPS),
    PathCase("split", {"max_batch_size": 2, "max_batch_tokens": 64, "prefix_cache_max_bytes": 0},
             taken=lambda s: s.max_batch_size == 2 and s.forward_calls >= BATCH_OPS * 3),
    # Texts on one shared prefix go to one forward call, which runs them in several model
    # invocations within the limits.
    PathCase("split-with-prefixes",
             {"max_batch_size": 2, "max_batch_tokens": 64, "call_overhead_tokens": 0},
             prefix_reuse=True,
             taken=lambda s: s.prefix_hits > 0 and s.model_invocations > s.forward_calls),
]


@pytest.fixture(scope="module")
def references(tiny_model: TinyModelPaths) -> References:
    return References(tiny_model.base_dir, tiny_model.adapter_dir)


@pytest.fixture(scope="module")
def backends(tiny_model: TinyModelPaths) -> Iterator[dict[str, HFBackend]]:
    """One backend per path, built on first use."""
    built: dict[str, HFBackend] = {}
    yield built
    for backend in built.values():
        backend.close()


def backend_for(path: PathCase, built: dict[str, HFBackend], tiny: TinyModelPaths) -> HFBackend:
    from swayscope.backends.hf import HFBackend

    if path.name not in built:
        backend = HFBackend(
            tiny.base_dir, tiny.adapter_dir, device="cpu", max_top_k=256, **path.settings
        )
        if not path.packed_head:
            backend.forward_pass.use_packed_head = False  # the model's own full-logits path
        built[path.name] = backend
    backend = built[path.name]
    assert backend.forward_pass.use_packed_head == path.packed_head, path.name
    assert backend.forward_pass.prefix_reuse == path.prefix_reuse, path.name
    return backend


CASES = view_cases()


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_op_equals_the_plain_computation(
    path: PathCase,
    case: ViewCase,
    backends: dict[str, HFBackend],
    references: References,
    tiny_model: TinyModelPaths,
) -> None:
    backend = backend_for(path, backends, tiny_model)
    plain = references.plain(case)
    start = backend.inst.stats.copy()
    with case.open(backend) as view:
        assert view.id == case.view_id
        every_op(
            view, plain, backend.inst.cache.clear, f"[{path.name}/{case.name}]",
            batched=path.batched, halves=path.halves,
        )
    took = backend.inst.stats.since(start, max_batch_size=backend.inst.stats.max_batch_size)
    assert path.taken(took), f"{path.name} was not taken: {took}"
