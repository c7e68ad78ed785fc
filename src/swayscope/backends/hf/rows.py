"""The rows of a model call and what a forward pass yields for one text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from swayscope.backends.api import RollingLogprob, TokenDist
from swayscope.backends.hf.prefix import LayerKV, Node, Start, TokenIds
from swayscope.errors import BackendError
from swayscope.instrumentation.codec import durable

#: What a request needs from a text: its next-token distribution only, or every token's score.
Need = Literal["last", "all"]


@durable
@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """What one forward pass over one text yields; every op is answered from it."""

    dist: TokenDist
    """Next-token distribution after the whole text, top ``max_top_k``."""
    rolling: RollingLogprob | None
    """Log-probability of every token given the ones before it; None when the request
    needed only ``dist`` (a later request that needs it recomputes the record)."""
    tokens_computed: int = 0
    """Positions this text's call ran through the model for it (shared prefixes count
    for the first text of the call that used them)."""
    tokens_reused: int = 0
    """Positions of this text taken from a shared prefix instead of computed for it."""

    @property
    def n_tokens(self) -> int:
        return int(self.dist.n_tokens or 0)

    @property
    def scored(self) -> bool:
        """Whether the record holds every token's log-probability."""
        return self.rolling is not None

    def token_scores(self) -> RollingLogprob:
        """The per-token log-probabilities; :class:`BackendError` when not computed."""
        if self.rolling is None:
            raise BackendError(
                "this forward record holds only the next-token distribution; request it "
                "with a per-token op (a backend bug: report it)"
            )
        return self.rolling


@dataclass(eq=False, slots=True)
class Row:
    """One row of a model call: ``ids[used:end]`` run after ``used`` positions taken from a
    prefix (a node built earlier in the batch, or a stored entry)."""

    ids: TokenIds
    used: int
    end: int
    parent: Node | None
    start: Start
    node: Node | None = None
    """The prefix this row builds (None: the row is a text)."""
    text: int = -1

    @property
    def fed(self) -> int:
        return self.end - self.used


@dataclass(slots=True)
class RowOut:
    """What a model call produced for one row."""

    logprobs: npt.NDArray[np.float64] | None = None
    top_values: npt.NDArray[np.float64] | None = None
    top_ids: npt.NDArray[np.int64] | None = None
    tail: float = 0.0
    kv: LayerKV | None = None


def row_kv(
    keys: torch.Tensor, values: torch.Tensor, b: int, used: int, width: int, fed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``b``'s keys and values without padding: its prefix, then what it fed."""

    def cut(t: torch.Tensor) -> torch.Tensor:
        parts = [t[b : b + 1, :, :used], t[b : b + 1, :, width : width + fed]]
        return torch.cat(parts, dim=2) if used else parts[1].clone()

    return cut(keys), cut(values)


__all__ = ["ForwardRecord", "Need", "Row", "RowOut", "row_kv"]
