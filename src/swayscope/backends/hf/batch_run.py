"""One forward call over a batch: rows run in waves, each once the prefix it starts from
is built; shared prefixes kept in the store; one :class:`ForwardRecord` per text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from swayscope.backends.api import RollingLogprob, TokenDist
from swayscope.backends.hf.planner import BatchLimits, plan_batches
from swayscope.backends.hf.prefix import PrefixEntry, PrefixPlan, PrefixStore, TokenIds
from swayscope.backends.hf.rows import ForwardRecord, Need, Row, RowOut
from swayscope.errors import BackendError


class RowRunner(Protocol):
    """What a batch run needs of the forward pass: one model call over rows, and its state."""

    store: PrefixStore
    limits: BatchLimits
    vocab_size: int

    def report(self, **counts: int) -> None: ...

    def run_rows(
        self, rows: list[Row], sources: list[PrefixEntry | None], need: Need
    ) -> list[RowOut]: ...


class BatchRun:
    """One :meth:`ForwardPass.compute`: rows run in waves, each once its prefix is built."""

    def __init__(self, fp: RowRunner, view_id: str | None, need: Need) -> None:
        self.fp = fp
        self.view_id = view_id
        self.need = need
        self.built: dict[int, PrefixEntry] = {}

    def run(self, batch: Sequence[TokenIds], plan: PrefixPlan) -> list[ForwardRecord]:
        rows = [
            Row(
                node.key,
                node.parent.length if node.parent is not None else node.start.used,
                node.length,
                node.parent,
                node.start,
                node=node,
            )
            for node in plan.nodes
        ]
        texts = [
            Row(ids, plan.used(i), len(ids), plan.node_of[i], plan.start_of[i], text=i)
            for i, ids in enumerate(batch)
        ]
        outs = self.run_waves(rows + texts)
        self.fp.report(prefix_hits=sum(1 for r in rows + texts if r.used > 0))
        if self.view_id is not None:
            for r in rows + texts:
                if r.parent is None and r.start.entry is not None:
                    self.fp.store.touch(self.view_id, r.start.entry)
        fed = {id(r.node): r.fed for r in rows}
        counted: set[int] = set()
        records: list[ForwardRecord] = []
        for r in texts:
            computed = r.fed
            node = r.parent
            while node is not None and id(node) not in counted:
                counted.add(id(node))
                computed += fed[id(node)]
                node = node.parent
            records.append(self.record(r, outs[id(r)], computed))
        return records

    def source(self, row: Row) -> PrefixEntry | None:
        """The entry ``row`` starts from: built earlier in this batch, or stored."""
        if row.parent is not None:
            return self.built[id(row.parent)]
        return row.start.entry

    def run_waves(self, rows: list[Row]) -> dict[int, RowOut]:
        """Run every row once the prefix it starts from is built; outputs by ``id(row)``."""
        outs: dict[int, RowOut] = {}
        limits = self.fp.limits
        pending = rows
        while pending:
            ready = [r for r in pending if r.parent is None or id(r.parent) in self.built]
            pending = [r for r in pending if r not in ready]
            groups = plan_batches(
                {i: r.fed for i, r in enumerate(ready)},
                max_batch_size=limits.max_batch_size,
                max_batch_tokens=limits.max_batch_tokens,
                call_overhead_tokens=limits.call_overhead_tokens,
            )
            for group in groups:
                chunk = [ready[i] for i in group]
                results = self.fp.run_rows(chunk, [self.source(r) for r in chunk], self.need)
                for row, out in zip(chunk, results, strict=True):
                    outs[id(row)] = out
                    if row.node is not None:
                        self.built[id(row.node)] = self.entry(row, out)
        return outs

    def entry(self, row: Row, out: RowOut) -> PrefixEntry:
        """The prefix a node row built; kept in the store when it fits the budget."""
        assert row.node is not None and out.kv is not None
        logprobs = self.prefixed(row, out.logprobs) if out.logprobs is not None else None
        nbytes = sum(
            k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in out.kv
        )
        entry = PrefixEntry(row.node.key, out.kv, logprobs, nbytes)
        if self.view_id is not None:
            self.fp.store.put(self.view_id, entry)
        return entry

    def prefixed(
        self, row: Row, own: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64] | None:
        """Per-token log-probabilities of ``row``'s tokens: its prefix's, then its own
        (None when the prefix holds none)."""
        if row.used == 0:
            return own
        source = self.source(row)
        if source is None or source.logprobs is None:
            return None
        return np.concatenate([source.logprobs[: row.used], own])

    def record(self, row: Row, out: RowOut, computed: int) -> ForwardRecord:
        assert out.top_values is not None and out.top_ids is not None
        n = len(row.ids)
        dist = TokenDist(
            token_ids=out.top_ids,
            logprobs=out.top_values,
            vocab_size=self.fp.vocab_size,
            tail_logprob=out.tail,
            n_tokens=n,
        )
        rolling = None
        if self.need == "all":
            assert out.logprobs is not None
            logprobs = self.prefixed(row, out.logprobs)
            if logprobs is None:
                raise BackendError(
                    "a shared prefix without per-token scores was used for a per-token "
                    "request (a backend bug: report it)"
                )
            rolling = RollingLogprob(
                token_ids=np.asarray(row.ids, dtype=np.int64), logprobs=logprobs, n_tokens=n
            )
        return ForwardRecord(dist, rolling, computed, row.used)


def out_of(record: ForwardRecord) -> RowOut:
    """A record's numbers in the shape a model call's row output has."""
    return RowOut(
        logprobs=record.token_scores().logprobs,
        top_values=record.dist.logprobs,
        top_ids=record.dist.token_ids,
    )


def agreement_tolerance(dtype: torch.dtype) -> float:
    """How far a fast path's numbers may be from the reference's (absolute and relative)."""
    return 1e-4 if dtype == torch.float32 else 2e-2


def outs_difference(a: list[RowOut], b: list[RowOut], dtype: torch.dtype) -> float | None:
    """None when ``a`` and ``b`` agree within :func:`agreement_tolerance`, else the largest
    absolute difference of their numbers (infinite where one lacks numbers the other has)."""
    tol = agreement_tolerance(dtype)
    agree, largest = True, 0.0
    for x, y in zip(a, b, strict=True):
        for u, v in ((x.logprobs, y.logprobs), (x.top_values, y.top_values)):
            if u is None or v is None or u.shape != v.shape:
                return math.inf
            if u.size:
                largest = max(largest, float(np.max(np.abs(u - v))))
            agree = agree and bool(np.allclose(u, v, atol=tol, rtol=tol))
    return None if agree else largest


__all__ = ["BatchRun", "RowRunner", "agreement_tolerance", "out_of", "outs_difference"]
