"""The forward pass: batches of token ids in, one :class:`ForwardRecord` per text out.

A batch is left-padded with an attention mask and matching ``position_ids``, so
every text ends at the last column. The output head (the widest matmul) runs only
on real tokens when that reproduces the model's own logits (checked once at
start); otherwise the model's full ``[B, L, V]`` logits are used. An out-of-memory
batch is split in half and retried (``inst.stats.oom_splits``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from swayscope.backends.api import RollingLogprob, TokenDist
from swayscope.errors import BackendError, InputError
from swayscope.instrumentation import BackendInstrumentation


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """What one forward pass over one text yields; every op is answered from it."""

    dist: TokenDist
    """Next-token distribution after the whole text, top ``max_top_k``."""
    rolling: RollingLogprob
    """Log-probability of every token given the ones before it."""

    @property
    def n_tokens(self) -> int:
        return self.rolling.n_tokens


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) ran out of memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def packed_head_parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder body and output head of a PEFT model over the usual ``*ForCausalLM``."""
    base = model.get_base_model()
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings()
    if not isinstance(body, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    return body, head


def left_pad(
    batch: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` ``[B, L]``, every text
    ending at the last column."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, mask, position_ids


class ForwardPass:
    """Runs the PEFT model over batches of token ids, one call at a time.

    ``use_packed_head`` says whether the output head runs on real tokens only; it
    is chosen by a self-check at construction and may be switched off to compare
    with the model's own full-logits path.
    """

    def __init__(
        self,
        model: Any,
        inst: BackendInstrumentation,
        *,
        device: torch.device,
        dtype: torch.dtype,
        pad_id: int,
        vocab_size: int,
        max_top_k: int,
    ) -> None:
        self.model = model
        self.inst = inst
        self.device = device
        self.dtype = dtype
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self.max_top_k = max_top_k
        self._lock = threading.RLock()
        self._closed = False
        self._parts = packed_head_parts(model)
        self.use_packed_head = False
        self.use_packed_head = self._packed_head_agrees()

    def close(self) -> None:
        """Refuse every later call (the backend is closed)."""
        self._closed = True

    def compute(self, batch: list[list[int]]) -> list[ForwardRecord]:
        """One forward call over ``batch`` (split in halves on out-of-memory)."""
        if self._closed:
            raise BackendError("the backend is closed; build a new HFBackend")
        with self._lock, torch.inference_mode():
            return self._split_on_oom(batch)

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[T, V]`` of the real (unpadded) positions, row after row.

        The packed path runs the decoder body on the padded batch and the output
        head only on real tokens (padding is waste there); the full path asks the
        whole model for ``[B, L, V]`` logits.
        """
        real = attention_mask.bool()
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": False,
        }
        if self.use_packed_head and self._parts is not None:
            body, head = self._parts
            out = body(**kwargs)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            packed: torch.Tensor = head(hidden[real])
            return packed
        logits: torch.Tensor = self.model(**kwargs).logits
        return logits[real]

    def _packed_head_agrees(self) -> bool:
        """Whether the packed head reproduces the model's own logits on a padded probe."""
        if self._parts is None:
            return False
        probe = torch.tensor([[self.pad_id, 1, 2, 3], [4, 5, 6, 7]], dtype=torch.long)
        probe = probe.clamp(max=self.vocab_size - 1).to(self.device)
        mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.long, device=self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        tol = 1e-4 if self.dtype == torch.float32 else 2e-2
        try:
            with self._lock, torch.inference_mode():
                full = self.logits(probe, mask, pos).float()
                self.use_packed_head = True
                packed = self.logits(probe, mask, pos).float()
            return bool(torch.allclose(full, packed, atol=tol, rtol=tol))
        except Exception:
            return False
        finally:
            self.use_packed_head = False

    def _split_on_oom(self, batch: list[list[int]]) -> list[ForwardRecord]:
        try:
            return self._records(batch)
        except Exception as exc:
            if not is_oom(exc):
                if isinstance(exc, (BackendError, InputError)):
                    raise
                raise BackendError(
                    f"forward pass failed on {len(batch)} text(s) of up to "
                    f"{max(map(len, batch))} tokens: {type(exc).__name__}: {exc}"
                ) from exc
            if len(batch) <= 1:
                raise BackendError(
                    f"out of device memory on a single text of {len(batch[0])} tokens; "
                    "shorten it, use a smaller dtype or run on a larger device"
                ) from exc
        # Out of memory: release what the failed call held, then retry in halves.
        self.inst.stats.oom_splits += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        mid = len(batch) // 2
        return self._split_on_oom(batch[:mid]) + self._split_on_oom(batch[mid:])

    def _records(self, batch: list[list[int]]) -> list[ForwardRecord]:
        input_ids, mask, position_ids = left_pad(batch, self.pad_id)
        # [T, V]: the real positions of row 0, then row 1, ...
        scores = self.logits(
            input_ids.to(self.device), mask.to(self.device), position_ids.to(self.device)
        ).float()
        return self._records_from_scores(scores, batch)

    def _records_from_scores(
        self, scores: torch.Tensor, batch: list[list[int]]
    ) -> list[ForwardRecord]:
        """Each text's token log-probabilities and its last position's top-k distribution."""
        vocab = int(scores.shape[-1])
        k = min(self.max_top_k, vocab)
        ends = np.cumsum([len(ids) for ids in batch])
        starts = ends - np.asarray([len(ids) for ids in batch])
        pred = np.concatenate([np.arange(s, e - 1) for s, e in zip(starts, ends, strict=True)])
        targets = [t for ids in batch for t in ids[1:]]
        dev = scores.device
        logz = torch.logsumexp(scores, dim=-1)
        pred_t = torch.as_tensor(pred, dtype=torch.long, device=dev)
        tgt_t = torch.tensor(targets, dtype=torch.long, device=dev)
        token_lp = scores[pred_t, tgt_t] - logz[pred_t]
        last_t = torch.as_tensor(ends - 1, dtype=torch.long, device=dev)
        last = scores[last_t] - logz[last_t, None]  # [B, V]
        top = torch.topk(last, k, dim=-1, sorted=True)
        tail = torch.logsumexp(last.scatter(-1, top.indices, -math.inf), dim=-1)
        return _assemble(
            batch,
            vocab,
            token_np=token_lp.double().cpu().numpy(),
            top_np=top.values.double().cpu().numpy(),
            ids_np=top.indices.cpu().numpy().astype(np.int64),
            tail_np=tail.double().cpu().numpy(),
        )


def _assemble(
    batch: list[list[int]],
    vocab: int,
    *,
    token_np: npt.NDArray[np.float64],
    top_np: npt.NDArray[np.float64],
    ids_np: npt.NDArray[np.int64],
    tail_np: npt.NDArray[np.float64],
) -> list[ForwardRecord]:
    """Cut the batch-wide arrays into one record per text (copies: records outlive them)."""
    records: list[ForwardRecord] = []
    offset = 0
    for row, ids in enumerate(batch):
        n = len(ids)
        dist = TokenDist(
            token_ids=ids_np[row].copy(),
            logprobs=top_np[row].copy(),
            vocab_size=vocab,
            tail_logprob=float(tail_np[row]),
            n_tokens=n,
        )
        rolling = RollingLogprob(
            token_ids=np.asarray(ids, dtype=np.int64),
            logprobs=token_np[offset : offset + n - 1].copy(),
            n_tokens=n,
        )
        offset += n - 1
        records.append(ForwardRecord(dist=dist, rolling=rolling))
    return records


__all__ = ["ForwardPass", "ForwardRecord", "is_oom", "left_pad", "packed_head_parts"]
