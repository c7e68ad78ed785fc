"""Shared-prefix reuse: which token prefixes to compute once, and the store that keeps them.

Texts that start with the same tokens (a neutral context, a chat template, a
system prompt) need the model's keys and values for those tokens only once per
view; each text then runs only its own suffix on top of them. The idea is that
of vLLM's automatic prefix caching and SGLang's RadixAttention, on token ids,
sized for a scoring tool: entries are whole prefixes, kept per view under a
byte budget, least recently used first out.

A :class:`PrefixEntry` for the shared tokens ``key = ids[:K + 1]`` holds the
keys and values of the first ``K`` tokens and, when asked for, the
log-probability of each of ``ids[1..K]`` (the last shared token is predicted
inside the entry, but its own keys and values are computed again with each
suffix: that position's output is what the suffix's first prediction needs).
A text ``t`` can start from the first ``u`` positions of an entry when its
first ``u + 1`` tokens equal the key's (``u <= K``) and it has a token left to
run (``u < len(t)``); a longer shared part is reused from a shorter entry only
up to the entry's end.

:func:`plan_prefixes` decides, for one batch of texts, which shared prefixes to
compute (the branch points of the texts' token tree, where sharing saves more
tokens than one more model call costs) and where every text starts from.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from swayscope.backends.api import DEFAULT_PREFIX_CACHE_BYTES

TokenIds = Sequence[int]
#: Keys and values per layer, each ``[1, heads, K, head_dim]``.
LayerKV = list[tuple[Any, Any]]


@dataclass(eq=False, slots=True)
class PrefixEntry:
    """The model's keys and values for a shared token prefix, under one view."""

    key: tuple[int, ...]
    """The shared token ids; the keys and values cover all but the last."""
    kv: LayerKV
    logprobs: npt.NDArray[np.float64] | None
    """Log-probability of ``key[1:]``, each given the tokens before it; None when the
    entry was built for a request that needed no per-token scores."""
    nbytes: int = 0

    @property
    def length(self) -> int:
        """How many positions of keys and values the entry holds (``len(key) - 1``)."""
        return len(self.key) - 1


def shared_length(a: TokenIds, b: TokenIds) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def usable_length(entry: PrefixEntry, ids: TokenIds, limit: int) -> int:
    """How many of ``entry``'s positions a text ``ids`` can start from, at most ``limit``."""
    return max(0, min(entry.length, shared_length(entry.key, ids) - 1, limit))


@dataclass(frozen=True, slots=True)
class Start:
    """Where one row starts: the first ``used`` positions of a stored entry (or nothing)."""

    entry: PrefixEntry | None = None
    used: int = 0


NO_START = Start()


class PrefixStore:
    """Prefix entries by (view, token ids), within a byte budget; LRU eviction.

    Entries of one view are never offered to another: a view is a state of the
    adapter weights, and keys and values depend on them. Reports evictions, entries
    and bytes through ``report`` (to the instrumentation's counters).
    """

    def __init__(self, max_bytes: int, report: Callable[..., None]) -> None:
        self.max_bytes = max_bytes
        self._report = report
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], PrefixEntry] = OrderedDict()
        self._nbytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, view_id: str, ids: TokenIds, limit: int, *, scored: bool) -> Start:
        """The stored entry ``ids`` can start furthest into (at most ``limit`` positions);
        ``scored``: only entries that carry per-token log-probabilities."""
        best = NO_START
        for (vid, _), entry in self._entries.items():
            if vid != view_id or (scored and entry.logprobs is None):
                continue
            used = usable_length(entry, ids, limit)
            if used > best.used:
                best = Start(entry, used)
        return best

    def touch(self, view_id: str, entry: PrefixEntry) -> None:
        """Mark ``entry`` as just used (least recently used goes first)."""
        key = (view_id, entry.key)
        if self._entries.get(key) is entry:
            self._entries.move_to_end(key)

    def put(self, view_id: str, entry: PrefixEntry) -> None:
        """Keep ``entry`` (replacing one with the same key), evicting the least recently
        used beyond the budget; an entry larger than the whole budget is not kept."""
        if not self.enabled or entry.nbytes > self.max_bytes:
            return
        key = (view_id, entry.key)
        old = self._entries.pop(key, None)
        if old is not None:
            self._nbytes -= old.nbytes
        self._entries[key] = entry
        self._nbytes += entry.nbytes
        evicted_n = 0
        while self._nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._nbytes -= evicted.nbytes
            evicted_n += 1
        self._publish(evicted_n)

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0
        self._publish()

    def _publish(self, evictions: int = 0) -> None:
        self._report(
            prefix_entries=len(self._entries), prefix_bytes=self._nbytes,
            prefix_evictions=evictions,
        )


@dataclass(eq=False, slots=True)
class Node:
    """A shared prefix the batch computes once: ``key`` = its shared tokens."""

    key: tuple[int, ...]
    parent: Node | None
    """The node it starts from (computed earlier in the same batch), if any."""
    start: Start
    """Where it starts when ``parent`` is None (a stored entry, or the beginning)."""
    users: list[int] = field(default_factory=list)
    """Indices of the texts that start from it (directly)."""

    @property
    def length(self) -> int:
        return len(self.key) - 1


@dataclass(slots=True)
class PrefixPlan:
    """For one batch: the prefixes to compute (parents before children) and each text's start."""

    nodes: list[Node]
    node_of: list[Node | None]
    """The node each text starts from (all of its positions), or None."""
    start_of: list[Start]
    """Where a text with no node starts (a stored entry, or the beginning)."""

    def used(self, i: int) -> int:
        """How many positions of text ``i`` come from a shared prefix."""
        node = self.node_of[i]
        return node.length if node is not None else self.start_of[i].used


def _intervals(texts: Sequence[TokenIds], order: list[int]) -> list[tuple[int, int, int]]:
    """``(depth, lo, hi)``: runs ``order[lo..hi]`` (>= 2 texts) sharing their first
    ``depth`` tokens, for every depth where the run branches, outermost first."""
    lcp = [0] + [shared_length(texts[order[i - 1]], texts[order[i]]) for i in range(1, len(order))]
    found: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int]] = [(0, 0)]  # (depth, lo)
    for i in range(1, len(order) + 1):
        depth = lcp[i] if i < len(order) else 0
        lo = i - 1
        while depth < stack[-1][0]:
            d, lo = stack.pop()
            found.append((d, lo, i - 1))
        if depth > stack[-1][0]:
            stack.append((depth, lo))
    return sorted(found, key=lambda t: (t[0], t[1]))


def plan_prefixes(
    texts: Sequence[TokenIds],
    lookup: Callable[[TokenIds, int], Start],
    min_saving: int,
) -> PrefixPlan:
    """Which shared prefixes of ``texts`` to compute once, and where each text starts.

    ``lookup(ids, limit)`` returns the best stored start for ``ids`` (at most
    ``limit`` positions). A branch point of the texts' token tree shared by ``c``
    texts becomes a node when computing it once saves more than ``min_saving``
    tokens: ``(c - 1)`` times the positions it adds over where it would start
    anyway (a stored entry, or the node above it).
    """
    order = sorted(range(len(texts)), key=lambda i: list(texts[i]))
    owner: list[Node | None] = [None] * len(texts)  # deepest node covering each text
    nodes: list[Node] = []
    for depth, lo, hi in _intervals(texts, order):
        if depth < 2:
            continue
        members = order[lo : hi + 1]
        ids = texts[members[0]]
        parent = owner[members[0]]
        inherited = parent.length if parent is not None else 0
        stored = lookup(ids[:depth], depth - 1)
        base = max(inherited, stored.used)
        if (len(members) - 1) * (depth - 1 - base) <= min_saving:
            continue
        from_store = stored.used > inherited
        node = Node(
            key=tuple(ids[:depth]),
            parent=None if from_store else parent,
            start=stored if from_store else NO_START,
        )
        nodes.append(node)
        for i in members:
            owner[i] = node
    node_of: list[Node | None] = [None] * len(texts)
    start_of = [NO_START] * len(texts)
    for i, ids in enumerate(texts):
        deepest = owner[i]
        stored = lookup(ids, len(ids) - 1)
        if deepest is not None and deepest.length >= stored.used:
            node_of[i] = deepest
            deepest.users.append(i)
        else:
            start_of[i] = stored
    return PrefixPlan(nodes=_needed(nodes), node_of=node_of, start_of=start_of)


def _needed(nodes: list[Node]) -> list[Node]:
    """``nodes`` without those no text starts from, directly or through a node below."""
    children: dict[int, int] = {}
    for node in nodes:
        if node.parent is not None:
            children[id(node.parent)] = children.get(id(node.parent), 0) + 1
    kept: list[Node] = []
    for node in reversed(nodes):
        if node.users or children.get(id(node), 0):
            kept.append(node)
            continue
        if node.parent is not None:
            children[id(node.parent)] -= 1
    return kept[::-1]


__all__ = [
    "DEFAULT_PREFIX_CACHE_BYTES",
    "NO_START",
    "Node",
    "PrefixEntry",
    "PrefixPlan",
    "PrefixStore",
    "Start",
    "plan_prefixes",
    "shared_length",
    "usable_length",
]
