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

import inspect
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from swayscope.backends.api import RollingLogprob, TokenDist
from swayscope.backends.hf.kv import KV, CallCache
from swayscope.backends.hf.planner import BatchLimits, plan_batches
from swayscope.backends.hf.prefix import (
    NO_START,
    LayerKV,
    Node,
    PrefixEntry,
    PrefixPlan,
    PrefixStore,
    Start,
    TokenIds,
    plan_prefixes,
)
from swayscope.errors import BackendError, InputError
from swayscope.instrumentation import BackendInstrumentation

log = logging.getLogger(__name__)

#: What a request needs from a text: its next-token distribution only, or every token's score.
Need = Literal["last", "all"]


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


def full_attention_only(config: Any) -> bool:
    """Whether every layer attends to every earlier position (no sliding window, no
    recurrent state): only then are a prefix's keys and values all a suffix needs."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    window = getattr(text, "sliding_window", None)
    return window is None or getattr(text, "use_sliding_window", True) is False


def cache_keyword(model: Any) -> str:
    """The keyword a causal LM takes its key/value cache under (``cache`` since
    transformers 5.24, ``past_key_values`` before)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


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
        self.store = PrefixStore(prefix_cache_max_bytes, inst.stats)
        self._lock = threading.RLock()
        self._closed = False
        self._parts = packed_head_parts(model)
        self._cache_kwarg = cache_keyword(model.get_base_model())
        self.use_packed_head = False
        self.prefix_reuse = False
        prefixes = self.store.enabled and full_attention_only(model.config)
        self._self_check(prefixes=prefixes)
        if prefixes and not self.prefix_reuse:
            log.warning("shared-prefix reuse disagrees with whole passes on this model; it is off")

    def close(self) -> None:
        """Refuse every later call (the backend is closed) and drop stored prefixes."""
        self._closed = True
        self.store.clear()

    def compute(
        self, batch: Sequence[TokenIds], *, view_id: str | None = None, need: Need = "all"
    ) -> list[ForwardRecord]:
        """One forward call over ``batch`` under the active view.

        ``view_id`` names the active view; prefixes are shared only with a view id,
        and only with calls of the same view. ``need``: ``"last"`` or ``"all"``.
        """
        if self._closed:
            raise BackendError("the backend is closed; build a new HFBackend")
        with self._lock, torch.inference_mode():
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
        return _BatchRun(self, view_id, need).run(batch, self._plan(batch, view_id, need))

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
        self.inst.stats.oom_splits += 1
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
        self.inst.stats.model_invocations += 1
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
                outs[b].kv = [_row_kv(k, v, j, r.used, width, r.fed) for k, v in layers]
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
        Each is used only when it agrees with the reference (1e-4 in float32).
        """
        # As short as can still show a difference: the model's fixed cost per call and the
        # vocabulary-wide head at every position are what this check costs at start-up.
        shared = [min(3 + i, self.vocab_size - 1) for i in range(2)]
        probe = [shared + [min(20 + i, self.vocab_size - 1)] * (1 + i % 2) for i in range(3)]
        rows = [Row(ids, 0, len(ids), None, NO_START, text=i) for i, ids in enumerate(probe)]
        stats = self.inst.stats
        counts = (stats.model_invocations, stats.prefix_hits)
        caught: list[torch.Tensor] = []
        hook = None
        if self._parts is not None:
            hook = self._parts[0].register_forward_hook(
                lambda _m, _a, out: caught.append(
                    out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                )
            )
        try:
            with self._lock, torch.inference_mode():
                keep = [0] if prefixes else []
                whole = self._run_once(rows, [None] * len(rows), "all", keep=keep)
                if hook is not None:
                    hook.remove()
                    hook = None
                if caught:
                    self.use_packed_head = True
                    packed = self._score_rows(rows, caught[0], "all")
                    self.use_packed_head = _outs_agree(whole, packed, self.dtype)
                if prefixes:
                    self.prefix_reuse = self._prefix_agrees(probe, whole, len(shared) - 1)
        except Exception:
            log.debug("forward pass self-check failed", exc_info=True)
            self.use_packed_head = self.prefix_reuse = False
        finally:
            if hook is not None:
                hook.remove()
            stats.model_invocations, stats.prefix_hits = counts

    def _prefix_agrees(self, probe: list[list[int]], whole: list[RowOut], length: int) -> bool:
        """Whether ``probe``'s texts, run on the first ``length`` positions of the first
        text's keys and values, score as ``whole`` (their whole-text reference)."""
        kv, logprobs = whole[0].kv, whole[0].logprobs
        assert kv is not None and logprobs is not None
        entry = PrefixEntry(
            tuple(probe[0][: length + 1]),
            [(k[:, :, :length], v[:, :, :length]) for k, v in kv],
            logprobs[:length],
        )
        # The first text runs whole beside the others: one call with a padded, masked prefix.
        starts = [NO_START] + [Start(entry, length)] * (len(probe) - 1)
        plan = PrefixPlan([], [None] * len(probe), starts)
        reused = _BatchRun(self, None, "all").run(probe, plan)
        return _outs_agree(whole, [_out_of(r) for r in reused], self.dtype)


class _BatchRun:
    """One :meth:`ForwardPass.compute`: rows run in waves, each once its prefix is built."""

    def __init__(self, fp: ForwardPass, view_id: str | None, need: Need) -> None:
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
        self.fp.inst.stats.prefix_hits += sum(1 for r in rows + texts if r.used > 0)
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


def _out_of(record: ForwardRecord) -> RowOut:
    """A record's numbers in the shape a model call's row output has."""
    return RowOut(
        logprobs=record.token_scores().logprobs,
        top_values=record.dist.logprobs,
        top_ids=record.dist.token_ids,
    )


def _outs_agree(a: list[RowOut], b: list[RowOut], dtype: torch.dtype) -> bool:
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for x, y in zip(a, b, strict=True):
        for u, v in ((x.logprobs, y.logprobs), (x.top_values, y.top_values)):
            if u is None or v is None or u.shape != v.shape:
                return False
            if not np.allclose(u, v, atol=tol, rtol=tol):
                return False
    return True


def _row_kv(
    keys: torch.Tensor, values: torch.Tensor, b: int, used: int, width: int, fed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``b``'s keys and values without padding: its prefix, then what it fed."""

    def cut(t: torch.Tensor) -> torch.Tensor:
        parts = [t[b : b + 1, :, :used], t[b : b + 1, :, width : width + fed]]
        return torch.cat(parts, dim=2) if used else parts[1].clone()

    return cut(keys), cut(values)


__all__ = [
    "ForwardPass",
    "ForwardRecord",
    "Need",
    "Row",
    "RowOut",
    "cache_keyword",
    "full_attention_only",
    "is_oom",
    "packed_head_parts",
]
