"""How missed texts become forward calls: length-sorted groups under a token budget.

A forward call costs a fixed amount (Python, kernel launches) plus its padded
tokens. :func:`plan_batches` weighs the padding a merged call wastes against the
calls a split saves; :func:`guess_call_overhead` guesses the fixed cost, in tokens,
from the model's shape and the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from swayscope.backends.hf.prefix import NO_START, plan_prefixes, shared_length
from swayscope.instrumentation import BatchPlanner


@dataclass(slots=True)
class BatchLimits:
    """The limits a planner works within (mutable: the backend's settings point here)."""

    max_batch_size: int
    """At most this many texts per forward call."""
    max_batch_tokens: int
    """Token budget of one call: texts times the longest, padding included."""
    call_overhead_tokens: int
    """What one more call costs, in padded tokens (0 minimises padding)."""


def plan_batches(
    lengths: dict[int, int],
    *,
    max_batch_size: int,
    max_batch_tokens: int,
    call_overhead_tokens: int,
) -> list[list[int]]:
    """Split texts (index -> token count) into forward calls, shortest texts first.

    Texts are sorted by length and cut into contiguous groups of at most
    ``max_batch_size`` texts whose padded size (texts x longest) stays within
    ``max_batch_tokens`` (a longer text goes alone). Among those cuts it picks the
    one with the least cost, counting each call as ``call_overhead_tokens`` plus
    its padded tokens: one big call when lengths are alike, a few calls when
    padding the short texts to the long ones would cost more than an extra call.
    """
    order = sorted(lengths, key=lambda i: (lengths[i], i))
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j texts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j - 1, max(0, j - max_batch_size) - 1, -1):
            size = j - i
            if size > 1 and size * longest > max_batch_tokens:
                break
            cost = best[i] + call_overhead_tokens + size * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def sharing_groups(
    ids: dict[int, list[int]], *, min_saving: int, max_batch_tokens: int
) -> tuple[list[list[int]], list[int]]:
    """Texts (index -> token ids) that share a prefix worth computing once, grouped so each
    group holds one prefix and the texts on it, and the texts that share none.

    A group is cut (in token order) where its distinct tokens would pass
    ``max_batch_tokens``; the prefix store carries the shared part to the next piece.
    """
    keys = list(ids)
    texts = [ids[i] for i in keys]
    plan = plan_prefixes(texts, lambda _ids, _limit: NO_START, min_saving)
    clusters: dict[int, list[int]] = {}
    alone: list[int] = []
    for j in sorted(range(len(keys)), key=lambda j: texts[j]):
        node = plan.node_of[j]
        if node is None:
            alone.append(keys[j])
            continue
        while node.parent is not None:
            node = node.parent
        clusters.setdefault(id(node), []).append(j)
    groups: list[list[int]] = []
    for members in clusters.values():
        group: list[int] = []
        distinct = 0
        for j in members:
            new = len(texts[j]) - (shared_length(texts[group[-1]], texts[j]) if group else 0)
            if group and distinct + new > max_batch_tokens:
                groups.append([keys[g] for g in group])
                group, distinct, new = [], 0, len(texts[j])
            group.append(j)
            distinct += new
        groups.append([keys[g] for g in group])
    return groups, alone


def make_planner(
    texts: Sequence[str],
    ids: dict[int, list[int]],
    encode: Callable[[str], list[int]],
    limits: BatchLimits,
    *,
    shared_prefixes: bool = False,
) -> BatchPlanner:
    """A planner for the instrumentation core: tokenizes each missed text once into ``ids``
    (which the forward pass then reuses) and plans with :func:`plan_batches`.

    With ``shared_prefixes``, texts sharing a prefix worth computing once go to one
    forward call together (:func:`sharing_groups`; the call runs the prefix, then
    the texts on it); the others are planned as before.
    """

    def plan(misses: list[int]) -> list[list[int]]:
        for i in misses:
            if i not in ids:
                ids[i] = encode(texts[i])
        groups: list[list[int]] = []
        alone = misses
        if shared_prefixes:
            groups, alone = sharing_groups(
                {i: ids[i] for i in misses},
                min_saving=limits.call_overhead_tokens,
                max_batch_tokens=limits.max_batch_tokens,
            )
        return groups + plan_batches(
            {i: len(ids[i]) for i in alone},
            max_batch_size=limits.max_batch_size,
            max_batch_tokens=limits.max_batch_tokens,
            call_overhead_tokens=limits.call_overhead_tokens,
        )

    return plan


def guess_call_overhead(model: Any, device: torch.device, max_batch_tokens: int) -> int:
    """What one more forward call costs, in padded tokens, guessed from the model's shape.

    A call's fixed cost (Python, kernel launches) grows with the number of
    layers and a token's cost with the parameter count, so small models gain
    most from merging calls: the tiny 2-layer model comes out at ~250 tokens.
    Larger models get the floor (64 on CPU, where matmuls over more rows also
    run more efficiently; 1024 on CUDA, where a token costs far less than a
    call); never more than ``max_batch_tokens``.
    """
    layers = int(getattr(model.config, "num_hidden_layers", None) or 12)
    params_m: float = sum(p.numel() for p in model.parameters()) / 1e6
    cuda = device.type == "cuda"
    guess = round((80_000.0 if cuda else 40.0) * layers / max(params_m, 1e-3))
    floor = 1024 if cuda else 64
    return min(max_batch_tokens, max(floor, guess))


__all__ = [
    "BatchLimits",
    "guess_call_overhead",
    "make_planner",
    "plan_batches",
    "sharing_groups",
]
