"""The forward pass: token ids in, one :class:`ForwardRecord` per text out.

:meth:`ForwardPass.compute` takes a batch of token-id lists, the view they are
scored under and what the request needs (``"last"``: the next-token
distribution after the whole text; ``"all"``: that and the log-probability of
every token). It is a plain function of its arguments and the model's current
weights, so another process holding the same model can run it.

- **Shared prefixes** (:mod:`.prefix`): texts of the batch that start with the
  same tokens run those tokens once; texts that start with tokens a previous call
  of the same view computed start from its stored keys and values. Each text's
  own tokens then run on top, through transformers' ``DynamicCache``.
- **The output head only where needed**: the decoder runs over the batch, the
  head (vocabulary-wide, the largest matmul of a small model) only on the last
  position of each text for ``"last"``, on every real position for ``"all"``.
- **Rows** are right-padded (a text's real tokens never see padding: attention
  is causal) with explicit ``position_ids``; rows that start from different
  prefixes share one call, each prefix padded to the longest and masked.
- An out-of-memory model call is split in half and retried (``oom_splits``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from swayscope.backends.hf.batch_run import (
    BatchRun,
    agreement_tolerance,
    out_of,
    outs_difference,
)
from swayscope.backends.hf.kv import KV, CallCache
from swayscope.backends.hf.model_traits import (
    cache_keyword,
    full_attention_only,
    is_oom,
    model_label,
    packed_head_parts,
)
from swayscope.backends.hf.planner import BatchLimits
from swayscope.backends.hf.prefix import (
    NO_START,
    PrefixEntry,
    PrefixPlan,
    PrefixStore,
    Start,
    TokenIds,
    plan_prefixes,
)
from swayscope.backends.hf.rows import ForwardRecord, Need, Row, RowOut, row_kv
from swayscope.errors import BackendError, InputError
from swayscope.instrumentation import BackendInstrumentation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """A start-up check of a fast path against the model's plain one: what a warning says
    when the check fails or disagrees."""

    name: str
    turns_off: str
    """What is turned off when it does, and what runs instead."""
    compares: str
    """What is compared with what."""


#: The output head on the needed positions only, against the model's full logits.
PACKED_HEAD_CHECK = SelfCheck(
    "packed output head",
    "the output head on needed positions only (the model's full logits at every position "
    "instead: slower, same results)",
    "the decoder's output through the output head and the model's own logits",
)
#: Texts continued from a prefix's stored keys and values, against whole passes.
PREFIX_CHECK = SelfCheck(
    "shared-prefix reuse",
    "shared-prefix reuse (every text runs whole instead: slower, same results)",
    "texts run on a shared prefix's keys and values and the same texts run whole",
)
#: The reference run both checks compare with: when it fails, both paths stay off.
REFERENCE_RUN = "forward pass reference run"


class ForwardPass:
    """Runs the PEFT model over batches of token ids, one call at a time.

    ``use_packed_head`` says whether the output head runs only where needed (on the
    decoder's output); it is chosen by a self-check at construction and may be
    switched off to compare with the model's own full-logits path. ``prefix_reuse``
    likewise says whether shared prefixes are computed once (on when the store has a
    budget, the model attends fully, and a self-check agrees).
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
        limits: BatchLimits,
        prefix_cache_max_bytes: int,
    ) -> None:
        self.model = model
        self.inst = inst
        self.device = device
        self.dtype = dtype
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self.max_top_k = max_top_k
        self.limits = limits
        self._reporting = True
        self.store = PrefixStore(prefix_cache_max_bytes, self.report)
        #: Held by every use of the model (a forward call, a generation): one at a time.
        self.lock = threading.RLock()
        self._closed = False
        self._parts = packed_head_parts(model)
        self._cache_kwarg = cache_keyword(model.get_base_model())
        self.use_packed_head = False
        self.prefix_reuse = False
        self._self_check(prefixes=self.store.enabled and full_attention_only(model.config))

    def report(self, **counts: int) -> None:
        """What this pass did (model invocations, prefix hits, ...), to the instrumentation's
        counters; nothing while the start-up self-check runs."""
        if self._reporting:
            self.inst.report(**counts)

    def close(self) -> None:
        """Refuse every later call (the backend is closed) and drop stored prefixes."""
        self._closed = True
        self.store.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def compute(
        self, batch: Sequence[TokenIds], *, view_id: str | None = None, need: Need = "all"
    ) -> list[ForwardRecord]:
        """One forward call over ``batch`` under the active view.

        ``view_id`` names the active view; prefixes are shared only with a view id,
        and only with calls of the same view. ``need``: ``"last"`` or ``"all"``.
        """
        if self._closed:
            raise BackendError("the backend is closed; build a new HFBackend")
        with self.lock, torch.inference_mode():
            try:
                return self._compute(list(batch), view_id, need)
            except (BackendError, InputError):
                raise
            except Exception as exc:
                raise BackendError(
                    f"forward pass failed on {len(batch)} text(s) of up to "
                    f"{max(map(len, batch))} tokens: {type(exc).__name__}: {exc}"
                ) from exc

    # -- planning --------------------------------------------------------------------------

    def _plan(self, batch: Sequence[TokenIds], view_id: str | None, need: Need) -> PrefixPlan:
        if view_id is None or not self.prefix_reuse:
            return PrefixPlan([], [None] * len(batch), [NO_START] * len(batch))
        scored = need == "all"

        def lookup(ids: TokenIds, limit: int) -> Start:
            return self.store.best(view_id, ids, limit, scored=scored)

        return plan_prefixes(batch, lookup, self.limits.call_overhead_tokens)

    def _compute(
        self, batch: Sequence[TokenIds], view_id: str | None, need: Need
    ) -> list[ForwardRecord]:
        return BatchRun(self, view_id, need).run(batch, self._plan(batch, view_id, need))

    # -- model calls -----------------------------------------------------------------------

    def run_rows(
        self, rows: list[Row], sources: list[PrefixEntry | None], need: Need
    ) -> list[RowOut]:
        """One model call over ``rows`` (each starting from its ``sources`` entry), split in
        halves on out-of-memory."""
        try:
            return self._run_once(rows, sources, need)
        except Exception as exc:
            if not is_oom(exc):
                raise
            if len(rows) <= 1:
                raise BackendError(
                    f"out of device memory on a single text of {rows[0].end} tokens; "
                    "shorten it, use a smaller dtype or run on a larger device"
                ) from exc
        # Out of memory: release what the failed call held, then retry in halves.
        self.report(oom_splits=1)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        mid = len(rows) // 2
        return self.run_rows(rows[:mid], sources[:mid], need) + self.run_rows(
            rows[mid:], sources[mid:], need
        )

    def _past(
        self, rows: list[Row], sources: list[PrefixEntry | None], width: int
    ) -> list[KV]:
        """Per layer, each row's prefix keys and values, left-aligned, padded to ``width``."""
        first = next(s for s in sources if s is not None)
        same = all(s is first and r.used == width for s, r in zip(sources, rows, strict=True))
        past: list[KV] = []
        for layer, (k0, v0) in enumerate(first.kv):
            if same:
                keys = k0[:, :, :width].expand(len(rows), -1, -1, -1)
                values = v0[:, :, :width].expand(len(rows), -1, -1, -1)
            else:
                keys = k0.new_zeros((len(rows), k0.shape[1], width, k0.shape[3]))
                values = v0.new_zeros((len(rows), v0.shape[1], width, v0.shape[3]))
                for b, (s, r) in enumerate(zip(sources, rows, strict=True)):
                    if s is not None and r.used:
                        keys[b, :, : r.used] = s.kv[layer][0][0, :, : r.used]
                        values[b, :, : r.used] = s.kv[layer][1][0, :, : r.used]
            past.append((keys, values))
        return past

    def run_model(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: CallCache | None = None,
    ) -> torch.Tensor:
        """One model invocation: the decoder's output ``[B, S, H]`` (packed head) or the
        model's logits ``[B, S, V]`` (full path). With ``cache``, the rows continue from its
        prefixes, and it keeps what it was asked to keep."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": cache is not None,
        }
        if cache is not None:
            kwargs[self._cache_kwarg] = cache.cache
        self.report(model_invocations=1)
        if self.use_packed_head and self._parts is not None:
            out = self._parts[0](**kwargs)
            hidden: torch.Tensor = (
                out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            )
            return hidden
        logits: torch.Tensor = self.model(**kwargs).logits
        return logits

    def _head(self, states: torch.Tensor) -> torch.Tensor:
        """Vocabulary scores ``[M, V]`` of selected positions of :meth:`run_model`'s output."""
        if self.use_packed_head and self._parts is not None:
            scores: torch.Tensor = self._parts[1](states)
            return scores
        return states

    def _run_once(
        self,
        rows: list[Row],
        sources: list[PrefixEntry | None],
        need: Need,
        keep: list[int] | None = None,
    ) -> list[RowOut]:
        """One model invocation; ``keep``: the rows whose keys and values to return (default:
        the rows that build a prefix)."""
        width = max(r.used for r in rows)
        span = max(r.fed for r in rows)
        n = len(rows)
        input_ids = torch.full((n, span), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width + span), dtype=torch.long)
        positions = torch.arange(span, dtype=torch.long).repeat(n, 1)
        for b, r in enumerate(rows):
            input_ids[b, : r.fed] = torch.as_tensor(list(r.ids[r.used : r.end]), dtype=torch.long)
            mask[b, : r.used] = 1
            mask[b, width : width + r.fed] = 1
            positions[b] += r.used
        if keep is None:
            keep = [b for b, r in enumerate(rows) if r.node is not None]
        cache = None
        if width or keep:
            past = self._past(rows, sources, width) if width else None
            cache = CallCache(self.model.config, past, keep)
        hidden = self.run_model(
            input_ids.to(self.device), mask.to(self.device), positions.to(self.device), cache
        )
        outs = self._score_rows(rows, hidden, need)
        if cache is not None and keep:
            layers = cache.kept()
            for j, b in enumerate(keep):
                r = rows[b]
                outs[b].kv = [row_kv(k, v, j, r.used, width, r.fed) for k, v in layers]
        return outs

    def _score_rows(self, rows: list[Row], hidden: torch.Tensor, need: Need) -> list[RowOut]:
        """The head at the positions each row needs, and what each row gets from it.

        A text needs its last position (the next-token distribution) and, for
        ``"all"``, every position before it (the next token's log-probability); a
        prefix row needs its positions only for ``"all"``.
        """
        sel_rows: list[int] = []
        sel_cols: list[int] = []
        targets: list[int] = []  # token predicted at each selected position; -1: the last
        spans: list[tuple[int, int]] = []
        for b, r in enumerate(rows):
            first = len(sel_rows)
            if need == "all":
                cols = range(r.fed)
            else:
                cols = range(r.fed - 1, r.fed) if r.node is None else range(0)
            for c in cols:
                sel_rows.append(b)
                sel_cols.append(c)
                pos = r.used + c + 1
                targets.append(-1 if r.node is None and pos == len(r.ids) else int(r.ids[pos]))
            spans.append((first, len(sel_rows)))
        outs = [RowOut() for _ in rows]
        if not sel_rows:
            return outs
        dev = hidden.device
        picked = hidden[
            torch.as_tensor(sel_rows, device=dev), torch.as_tensor(sel_cols, device=dev)
        ]
        scores = self._head(picked).float()  # [M, V]
        logz = torch.logsumexp(scores, dim=-1)
        tgt = torch.as_tensor(targets, dtype=torch.long, device=dev)
        known = (tgt >= 0).nonzero().squeeze(-1)
        token_lp = torch.zeros(len(targets), dtype=torch.float32, device=dev)
        token_lp[known] = scores[known, tgt[known]] - logz[known]
        token_np = token_lp.double().cpu().numpy()
        lasts = (tgt < 0).nonzero().squeeze(-1)
        last = scores[lasts] - logz[lasts, None]  # [texts, V]
        k = min(self.max_top_k, int(scores.shape[-1]))
        top = torch.topk(last, k, dim=-1, sorted=True)
        tail = torch.logsumexp(last.scatter(-1, top.indices, -math.inf), dim=-1)
        top_np = top.values.double().cpu().numpy()
        ids_np = top.indices.cpu().numpy().astype(np.int64)
        tail_np = tail.double().cpu().numpy()
        j = 0
        for out, r, (lo, hi) in zip(outs, rows, spans, strict=True):
            if r.node is None:
                out.top_values, out.top_ids = top_np[j].copy(), ids_np[j].copy()
                out.tail = float(tail_np[j])
                j += 1
                if need == "all":
                    out.logprobs = token_np[lo : hi - 1].copy()
            elif need == "all":
                out.logprobs = token_np[lo:hi].copy()
        return outs

    # -- self-checks -----------------------------------------------------------------------

    def _self_check(self, *, prefixes: bool) -> None:
        """Choose ``use_packed_head`` and ``prefix_reuse`` with two small model calls.

        Three texts sharing their first tokens run through the model's own
        full-logits path: the reference. The decoder's output, caught on the way by
        a forward hook, gives the packed head's answer without another call. The
        first text's keys and values, cut to the shared tokens, are a prefix entry;
        one more call runs the other texts on it (and the first one whole, so the
        call pads and masks prefixes of different lengths): the shared-prefix answer.
        Each is used only when it agrees with the reference (1e-4 in float32); a check
        that fails or disagrees turns its path off with one warning that says why.
        """
        # As short as can still show a difference: the model's fixed cost per call and the
        # vocabulary-wide head at every position are what this check costs at start-up.
        shared = [min(3 + i, self.vocab_size - 1) for i in range(2)]
        probe = [shared + [min(20 + i, self.vocab_size - 1)] * (1 + i % 2) for i in range(3)]
        rows = [Row(ids, 0, len(ids), None, NO_START, text=i) for i, ids in enumerate(probe)]
        self._reporting = False  # the check's own calls are not the run's work
        caught: list[torch.Tensor] = []
        hook = None
        if self._parts is not None:
            hook = self._parts[0].register_forward_hook(
                lambda _m, _a, out: caught.append(
                    out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                )
            )
        try:
            with self.lock, torch.inference_mode():
                try:
                    keep = [0] if prefixes else []
                    whole = self._run_once(rows, [None] * len(rows), "all", keep=keep)
                except Exception as exc:
                    off = [PACKED_HEAD_CHECK] if self._parts is not None else []
                    self._turned_off(REFERENCE_RUN, exc, off + ([PREFIX_CHECK] if prefixes else []))
                    return
                finally:
                    if hook is not None:
                        hook.remove()
                        hook = None
                if caught:
                    self.use_packed_head = self._passes(
                        PACKED_HEAD_CHECK, lambda: self._packed_difference(rows, caught[0], whole)
                    )
                if prefixes:
                    self.prefix_reuse = self._passes(
                        PREFIX_CHECK,
                        lambda: self._prefix_difference(probe, whole, len(shared) - 1),
                    )
        finally:
            if hook is not None:
                hook.remove()
            self._reporting = True

    def _passes(self, check: SelfCheck, difference: Callable[[], float | None]) -> bool:
        """Whether ``check`` passes: ``difference`` runs and finds no disagreement (None).
        Otherwise one warning names the check, the model, what is off and why."""
        try:
            found = difference()
        except Exception as exc:
            self._turned_off(check.name, exc, [check])
            return False
        if found is None:
            return True
        tol = agreement_tolerance(self.dtype)
        self._turned_off(
            check.name,
            f"{check.compares} differ by up to {found:.2e} (allowed: {tol:.0e} plus {tol:.0e} "
            f"of the value, in {str(self.dtype).removeprefix('torch.')})",
            [check],
        )
        return False

    def _turned_off(self, name: str, why: str | Exception, off: list[SelfCheck]) -> None:
        """One warning: check ``name`` on this model failed (an exception) or disagreed
        (``why``), so the paths of ``off`` stay off."""
        if isinstance(why, Exception):
            log.debug("self-check %r failed", name, exc_info=why)
            why = f"it failed: {type(why).__name__}: {why}"
        log.warning(
            "start-up self-check %r on model %s: %s; turned off: %s",
            name, model_label(self.model), why,
            "; ".join(c.turns_off for c in off) or "nothing (no fast path applies)",
        )

    def _packed_difference(
        self, rows: list[Row], hidden: torch.Tensor, whole: list[RowOut]
    ) -> float | None:
        """How the packed head's answer for ``rows`` (from the decoder's output ``hidden``)
        differs from ``whole``, the model's own."""
        self.use_packed_head = True
        try:
            packed = self._score_rows(rows, hidden, "all")
        finally:
            self.use_packed_head = False
        return outs_difference(whole, packed, self.dtype)

    def _prefix_difference(
        self, probe: list[list[int]], whole: list[RowOut], length: int
    ) -> float | None:
        """How ``probe``'s texts, run on the first ``length`` positions of the first text's
        keys and values, differ from ``whole`` (their whole-text reference)."""
        kv, logprobs = whole[0].kv, whole[0].logprobs
        if kv is None or logprobs is None:
            raise BackendError("the reference run kept no keys and values for the prefix")
        entry = PrefixEntry(
            tuple(probe[0][: length + 1]),
            [(k[:, :, :length], v[:, :, :length]) for k, v in kv],
            logprobs[:length],
        )
        # The first text runs whole beside the others: one call with a padded, masked prefix.
        starts = [NO_START] + [Start(entry, length)] * (len(probe) - 1)
        plan = PrefixPlan([], [None] * len(probe), starts)
        reused = BatchRun(self, None, "all").run(probe, plan)
        return outs_difference(whole, [out_of(r) for r in reused], self.dtype)


__all__ = ["ForwardPass"]
