"""Views of the PEFT model: :class:`HFView` scores, :class:`ViewSlot` lets one in at a time.

A view reaches its backend only through a :class:`RecordSource` (``check_top_k``,
``completion_start``, ``record``, ``records``) and a :class:`GenerationSource`
(``generations``); it checks its inputs, asks for forward records and slices each
op's answer out of them, or asks for generations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from swayscope.backends.api import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TOP_K,
    Generation,
    RollingLogprob,
    TokenDist,
    ViewIdentity,
    check_text,
    null_view_id,
    scaled_view_id,
)
from swayscope.backends.hf.generate import GenerationSource
from swayscope.backends.hf.records import RecordSource
from swayscope.backends.hf.rows import ForwardRecord
from swayscope.backends.hf.view_state import ViewState
from swayscope.errors import ViewError
from swayscope.instrumentation import BackendInstrumentation


class HFView(ViewIdentity):
    """One view of the PEFT model; usable only inside its ``with`` block."""

    def __init__(
        self, source: RecordSource, generations: GenerationSource, view_id: str
    ) -> None:
        self._source = source
        self._generations = generations
        self._id = view_id
        self._live = True

    @property
    def live(self) -> bool:
        """Whether the view's ``with`` block is still running."""
        return self._live

    def end(self) -> None:
        """Mark the view ended (its ``with`` block has exited); scoring then raises."""
        self._live = False

    def _check_live(self) -> None:
        if not self._live:
            raise ViewError(
                f"view {self._id!r} is not active (its `with` block has ended); "
                f"score inside `with backend.<view>() as view:`"
            )

    def _record(self, op: str, text: str, top_k: int) -> ForwardRecord:
        self._check_live()
        return self._source.record(op, self._id, text, top_k)

    def _records(self, op: str, texts: Sequence[str], top_k: int) -> list[ForwardRecord]:
        self._check_live()
        return self._source.records(op, self._id, texts, top_k)

    def next_token_dist(self, prompt: str, *, top_k: int = DEFAULT_TOP_K) -> TokenDist:
        check_text(prompt)
        self._source.check_top_k(top_k)
        return self._record("next_token_dist", prompt, top_k).dist.truncate(top_k)

    def rolling_logprob(self, text: str) -> RollingLogprob:
        check_text(text, "text")
        return self._record("rolling_logprob", text, 0).token_scores()

    def logprob_of(self, prompt: str, completion: str) -> float:
        start = self._source.completion_start(prompt, completion)
        record = self._record("logprob_of", prompt + completion, 0)
        return float(record.token_scores().logprobs[start - 1 :].sum())

    def next_token_dist_batch(
        self, prompts: Sequence[str], *, top_k: int = DEFAULT_TOP_K
    ) -> list[TokenDist]:
        self._source.check_top_k(top_k)
        for p in prompts:
            check_text(p)
        return [r.dist.truncate(top_k) for r in self._records("next_token_dist", prompts, top_k)]

    def rolling_logprob_batch(self, texts: Sequence[str]) -> list[RollingLogprob]:
        for t in texts:
            check_text(t, "text")
        return [r.token_scores() for r in self._records("rolling_logprob", texts, 0)]

    def logprob_of_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        starts = [self._source.completion_start(p, c) for p, c in pairs]
        records = self._records("logprob_of", [p + c for p, c in pairs], 0)
        return [
            float(r.token_scores().logprobs[s - 1 :].sum())
            for r, s in zip(records, starts, strict=True)
        ]

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> Generation:
        return self.generate_batch([prompt], max_new_tokens=max_new_tokens, stop=stop)[0]

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        self._check_live()
        return self._generations.generations(self._id, prompts, max_new_tokens, stop)


class ViewSlot:
    """Lets one view in at a time: sets the model up for it, traces it, restores on exit.

    Args:
        inst: traces each view (``ViewEntered``/``ViewExited``, the switch cost).
        source: what the views it hands out score through.
        generations: what they generate through.
        restore: puts the model back to its resting state; runs on every exit and
            after a failed set-up.
    """

    def __init__(
        self,
        inst: BackendInstrumentation,
        source: RecordSource,
        generations: GenerationSource,
        restore: Callable[[], None],
    ) -> None:
        self._inst = inst
        self._source = source
        self._generations = generations
        self._restore = restore
        self._lock = threading.Lock()
        self._active: HFView | None = None
        self._closed = False

    def close(self) -> None:
        """Refuse every later view (the backend is closed)."""
        with self._lock:
            self._closed = True

    def check_idle(self, what: str) -> None:
        """:class:`ViewError` when a view is active (``what`` cannot be done inside one)."""
        with self._lock:
            if self._active is not None:
                raise ViewError(
                    f"cannot {what} while view {self._active.id!r} is active; exit it first"
                )

    @contextmanager
    def enter(self, view_id: str, configure: Callable[[], None]) -> Iterator[HFView]:
        """Run ``configure`` (the model's state for ``view_id``) and yield the view."""
        with self._lock:
            if self._closed:
                raise ViewError(f"cannot enter view {view_id!r}: the backend is closed")
            if self._active is not None:
                raise ViewError(
                    f"cannot enter view {view_id!r}: view {self._active.id!r} is still active; "
                    "exit it first (one view at a time)"
                )
            view = HFView(self._source, self._generations, view_id)
            self._active = view

        def set_up() -> None:
            try:
                configure()
            except BaseException:
                self._restore()
                raise

        try:
            with self._inst.view(view_id, enter=set_up, exit=self._restore):
                yield view
        finally:
            view.end()
            with self._lock:
                self._active = None


class ViewOpeners:
    """``base``, ``ft``, ``scaled`` and ``null`` of a backend: each lets its view in through
    the backend's :class:`ViewSlot` (``_views``), setting the model to the view's
    :class:`ViewState` with the backend's ``_set_view``."""

    _views: ViewSlot

    def _set_view(self, state: ViewState) -> None:
        raise NotImplementedError

    def _open(self, view_id: str, state: ViewState) -> AbstractContextManager[HFView]:
        return self._views.enter(view_id, lambda: self._set_view(state))

    def base(self) -> AbstractContextManager[HFView]:
        """The base model: every LoRA layer switched off."""
        return self._open("base", ViewState(0.0))

    def ft(self) -> AbstractContextManager[HFView]:
        """The fine-tuned model: the adapter as trained."""
        return self._open("ft", ViewState(1.0))

    def scaled(self, lam: float) -> AbstractContextManager[HFView]:
        """The adapter with every LoRA ``scaling`` times λ (λ = 0 is ``base``, λ = 1 is ``ft``)."""
        return self._open(scaled_view_id(lam), ViewState(float(lam)))

    def null(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> AbstractContextManager[HFView]:
        """A random LoRA in place of the adapter: the noise floor of "any adapter this size".

        Its tensors (see :mod:`swayscope.backends.hf.null_adapters`) are generated
        once per id from a CPU ``torch.Generator`` (identical across processes),
        kept (see ``max_null_adapters``), and swapped in for the adapter's
        ``lora_A``/``lora_B`` parameters while the view is active.
        """
        view_id = null_view_id(seed, init_scale, rank_scale)
        return self._open(view_id, ViewState(null=(seed, float(init_scale), float(rank_scale))))


__all__ = ["HFView", "ViewOpeners", "ViewSlot"]
