"""Where views get forward records: the instrumentation's cache, else planned forward calls.

Every scoring op shares one cached record per (view, text), stored under
:data:`FORWARD_OP` and the backend's ``max_top_k``, so asking a second op about
the same text costs no forward pass and a smaller ``top_k`` is sliced from the
record. ``next_token_dist`` needs only the last position's distribution, so
its misses are computed without per-token scores (the output head runs on one
position per text); a per-token op that finds such a record recomputes it with
the scores and the fuller record replaces it (:func:`need_of`, :func:`usable_for`).
:class:`RecordSource` is all of the backend a view can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from swayscope.backends.api import check_top_k
from swayscope.backends.hf.planner import BatchLimits, make_planner
from swayscope.backends.hf.prefix import TokenIds
from swayscope.backends.hf.rows import ForwardRecord, Need
from swayscope.backends.hf.tokenizer import TextEncoder
from swayscope.errors import InputError
from swayscope.instrumentation import BackendInstrumentation, BatchPlanner, CacheOp

#: The cache op every scoring op of this backend is stored under (one record per text).
FORWARD_OP = "forward"


def need_of(op: CacheOp) -> Need:
    """What ``op`` needs from a forward record: the last position only, or every token."""
    return "last" if op == "next_token_dist" else "all"


def _scored(record: Any) -> bool:
    return isinstance(record, ForwardRecord) and record.scored


def usable_for(op: CacheOp) -> Callable[[Any], bool] | None:
    """Which cached records answer ``op`` (None: every one)."""
    return None if need_of(op) == "last" else _scored


class Forward(Protocol):
    """What computes forward records: :class:`.ForwardPass` in this process, or a pool of
    workers each holding the model."""

    @property
    def max_top_k(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def prefix_reuse(self) -> bool:
        """Whether texts sharing a prefix are planned into one call (computed once)."""
        ...

    def compute(
        self, batch: Sequence[TokenIds], *, view_id: str | None = None, need: Need = "all"
    ) -> list[ForwardRecord]: ...


class RecordSource:
    """Forward records for views, through the instrumentation core (cache, batching, events).

    Args:
        inst: the instrumentation every lookup and forward call goes through.
        encoder: tokenizes and checks texts.
        forward: runs the model.
        limits: the batch limits planners use (read at plan time, so changes apply).
        key_model: view id → the model identity its cache entries are keyed by (None:
            the instrumentation's ``model_id``).
        propagate: ``forward`` computes in other processes: each call's trace context goes
            with it (``BackendInstrumentation.current_call``).
    """

    def __init__(
        self,
        inst: BackendInstrumentation,
        encoder: TextEncoder,
        forward: Forward,
        limits: BatchLimits,
        *,
        key_model: Callable[[str], str | None] = lambda view_id: None,
        propagate: bool = False,
    ) -> None:
        self._inst = inst
        self._encoder = encoder
        self._forward = forward
        self._limits = limits
        self._key_model = key_model
        self._propagate = propagate

    def check_top_k(self, top_k: int) -> None:
        """:class:`InputError` unless ``top_k`` is a positive integer the records can serve."""
        check_top_k(top_k)
        max_top_k = self._forward.max_top_k
        if top_k > max_top_k and max_top_k < self._forward.vocab_size:
            raise InputError(
                f"top_k={top_k} is above this backend's max_top_k={max_top_k}; ask for "
                f"top_k <= {max_top_k} or build HFBackend(max_top_k={top_k})"
            )

    def completion_start(self, prompt: str, completion: str) -> int:
        """Index of the first token of ``prompt + completion`` that the completion affects."""
        return self._encoder.completion_start(prompt, completion)

    def record(self, op: CacheOp, view_id: str, text: str, top_k: int) -> ForwardRecord:
        """The record of ``text`` under ``view_id`` (``op``/``top_k`` name the request)."""
        forward, encoder, need = self._forward, self._encoder, need_of(op)
        record: ForwardRecord = self._inst.cached(
            op,
            view_id,
            text,
            top_k,
            lambda: forward.compute([encoder.checked_ids(text)], view_id=view_id, need=need)[0],
            key_op=FORWARD_OP,
            key_top_k=forward.max_top_k,
            usable=usable_for(op),
            key_model=self._key_model(view_id),
            propagate=self._propagate,
        )
        return record

    def records(
        self, op: CacheOp, view_id: str, texts: Sequence[str], top_k: int
    ) -> list[ForwardRecord]:
        """The records of ``texts`` under ``view_id``; misses go out in planned batches."""
        forward, encoder, need = self._forward, self._encoder, need_of(op)
        ids: dict[int, list[int]] = {}

        def compute(indices: list[int]) -> list[ForwardRecord]:
            batch = [ids.get(i) or encoder.checked_ids(texts[i]) for i in indices]
            return forward.compute(batch, view_id=view_id, need=need)

        return self._inst.cached_batch(
            op,
            view_id,
            texts,
            top_k,
            compute,
            key_op=FORWARD_OP,
            key_top_k=forward.max_top_k,
            plan=self.planner(texts, ids),
            usable=usable_for(op),
            key_model=self._key_model(view_id),
            propagate=self._propagate,
        )

    def planner(self, texts: Sequence[str], ids: dict[int, list[int]]) -> BatchPlanner:
        """Plans forward calls for the missed ``texts``, tokenizing each into ``ids`` once."""
        return make_planner(
            texts, ids, self._encoder.checked_ids, self._limits,
            shared_prefixes=self._forward.prefix_reuse,
        )


__all__ = ["FORWARD_OP", "Forward", "RecordSource", "need_of", "usable_for"]
