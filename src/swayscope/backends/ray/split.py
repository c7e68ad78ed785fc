"""How one forward call's texts are split across the workers of a pool: balanced by tokens,
each prefix on its home worker.

A forward call's cost on a worker is about the tokens it runs: a prefix shared by
several texts of the part once, then each text's own tokens (the worker's
:class:`~swayscope.backends.hf.forward.ForwardPass` computes a shared prefix once
per call, and keeps it in its per-view prefix store for later calls). So:

- texts that start with the same :data:`AFFINITY_TOKENS` tokens form a group and
  stay together, so their shared prefix is computed once, on one worker;
- a group of two or more has a *home* worker, chosen by rendezvous hashing of (view, first tokens)
  over the workers: the same prefix of the same view goes to the same worker call
  after call, where the prefix store still holds its keys and values (and a lost
  worker moves only its own groups);
- the parts are balanced by estimated tokens (a shared prefix counted once; longest
  first onto the least-loaded worker); a group stays home unless that would put its
  home more than :data:`AFFINITY_SLACK` above an even share, and a group larger than
  an even share is cut into pieces (each pays the shared prefix once: running the
  pieces side by side beats running the group on one worker), piece ``j`` homed on
  the group's ``j``-th ranked worker; single texts then fill the least-loaded workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from swayscope.backends.hf.prefix import TokenIds, shared_length

#: Leading tokens that decide a text's group and home worker.
AFFINITY_TOKENS = 16
#: How far above an even share a part may grow to keep a group on its home worker.
AFFINITY_SLACK = 0.25

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Part:
    """The texts (indices into the call's batch, ascending) one worker computes."""

    worker: int
    indices: list[int]
    tokens: int
    """Estimated tokens to run: shared prefixes once, then each text's own."""


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value from ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def ranked_workers(view_id: str, key: Sequence[int], workers: Sequence[int]) -> list[int]:
    """``workers`` by preference for (``view_id``, ``key``): rendezvous (highest random
    weight) hashing, stable when other workers come and go."""
    digest = hashlib.blake2b(
        f"{view_id}\x1f{','.join(map(str, key))}".encode(), digest_size=8
    ).digest()
    seed = int.from_bytes(digest, "little")
    return sorted(workers, key=lambda w: (-_mix(seed ^ _mix(w)), w))


def _cost(batch: Sequence[TokenIds], members: Sequence[int]) -> int:
    """Tokens to run ``members`` (in token order) in one call: each text's tokens beyond
    what it shares with the text before it."""
    total = 0
    previous: TokenIds | None = None
    for i in members:
        ids = batch[i]
        total += len(ids) - (shared_length(previous, ids) if previous is not None else 0)
        previous = ids
    return total


@dataclass(slots=True)
class _Piece:
    key: tuple[int, ...]
    rank: int
    members: list[int]
    tokens: int


def _pieces(batch: Sequence[TokenIds], n_workers: int) -> tuple[list[_Piece], float]:
    """Groups of texts sharing their first tokens, those above an even share of the
    call's estimated tokens cut; and that even share."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, ids in enumerate(batch):
        groups.setdefault(tuple(ids[:AFFINITY_TOKENS]), []).append(i)
    costs: dict[tuple[int, ...], int] = {}
    for key, members in groups.items():
        members.sort(key=lambda i: list(batch[i]))
        costs[key] = _cost(batch, members)
    target = max(1.0, sum(costs.values()) / n_workers)
    pieces: list[_Piece] = []
    for key, members in groups.items():
        tokens = costs[key]
        if tokens <= target or len(members) == 1:
            pieces.append(_Piece(key, 0, members, tokens))
            continue
        n = min(len(members), math.ceil(tokens / target))
        size = math.ceil(len(members) / n)
        for j in range(0, len(members), size):
            chunk = members[j : j + size]
            pieces.append(_Piece(key, j // size, chunk, _cost(batch, chunk)))
    return pieces, target


def split_batch(batch: Sequence[TokenIds], workers: Sequence[int], view_id: str) -> list[Part]:
    """The parts of one forward call over ``batch``, one per worker that gets texts."""
    if not workers:
        raise ValueError("split_batch needs at least one worker")
    if len(workers) == 1:
        return [Part(workers[0], list(range(len(batch))), _cost(batch, range(len(batch))))]
    pieces, target = _pieces(batch, len(workers))
    loads = dict.fromkeys(workers, 0)
    members: dict[int, list[int]] = {w: [] for w in workers}
    limit = target * (1 + AFFINITY_SLACK)
    # Groups first, each onto its home while there is room; then single texts, longest
    # first onto the least-loaded worker (nothing of theirs is shared: no home to keep).
    grouped = [p for p in pieces if len(p.members) > 1 or p.rank > 0]
    single = [p for p in pieces if len(p.members) == 1 and p.rank == 0]
    order = sorted(grouped, key=lambda p: (-p.tokens, p.members[0])) + sorted(
        single, key=lambda p: (-p.tokens, p.members[0])
    )
    for piece in order:
        home = min(workers, key=lambda w: (loads[w], w))
        if len(piece.members) > 1 or piece.rank > 0:
            ranked = ranked_workers(view_id, piece.key, workers)
            preferred = ranked[piece.rank % len(ranked)]
            if loads[preferred] + piece.tokens <= limit:
                home = preferred
        loads[home] += piece.tokens
        members[home].extend(piece.members)
    return [Part(w, sorted(members[w]), loads[w]) for w in workers if members[w]]


__all__ = ["AFFINITY_SLACK", "AFFINITY_TOKENS", "Part", "ranked_workers", "split_batch"]
