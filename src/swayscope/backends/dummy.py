"""A numpy-only differential backend: deterministic per-view distributions, no torch.

The test double for everything above the backend layer. Logits are a pure
function of (view, token prefix), seeded through SHA-256, so results are
identical across processes. ``ft`` is ``base + delta``, ``scaled(λ)`` is
``base + λ·delta``, ``null(seed)`` is ``base`` plus seeded noise of the same
size as ``delta``. Greedy generation takes the most likely token at every step and
writes token ``t`` as the character ``chr(32 + t % 95)`` (printable ASCII).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from swayscope.backends.api import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TOP_K,
    GENERATE_OP,
    FinishReason,
    Generation,
    RollingLogprob,
    TokenDist,
    ViewIdentity,
    check_generation,
    check_text,
    check_top_k,
    cut_at_stop,
    null_view_id,
    repeated,
    scaled_view_id,
)
from swayscope.errors import InputError, ViewError
from swayscope.instrumentation import BackendInstrumentation

T = TypeVar("T")


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _log_softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted: npt.NDArray[np.float64] = logits - logits.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


class DummyView(ViewIdentity):
    """One view of the dummy model; every scoring method goes through the core."""

    def __init__(
        self,
        backend: DummyBackend,
        view_id: str,
        lam: float,
        null_seed: int | None,
        null_scale: float,
    ) -> None:
        self._backend = backend
        self._inst = backend.inst
        self._id = view_id
        self._lam = lam
        self._null_seed = null_seed
        self._null_scale = null_scale

    # -- the model ------------------------------------------------------------------

    def _logits(self, prefix: tuple[int, ...]) -> npt.NDArray[np.float64]:
        b = self._backend
        logits = _rng("base", b.seed, prefix).normal(0.0, 2.0, b.vocab_size)
        if self._lam:
            logits = logits + self._lam * _rng("delta", b.seed, prefix).normal(
                0.0, b.adapter_strength, b.vocab_size
            )
        if self._null_seed is not None:
            logits = logits + _rng("null", b.seed, self._null_seed, prefix).normal(
                0.0, b.null_strength * self._null_scale, b.vocab_size
            )
        return _log_softmax(logits)

    def _compute_next_token_dist(self, prompt: str, top_k: int) -> TokenDist:
        self._backend.simulate_latency()
        ids = self._backend.tokenize(prompt)
        logprobs = self._logits(ids)
        order = np.argsort(-logprobs, kind="stable")[:top_k]
        top = logprobs[order]
        tail = 1.0 - float(np.exp(top).sum())
        return TokenDist(
            token_ids=order.astype(np.int64),
            logprobs=top,
            vocab_size=self._backend.vocab_size,
            tail_logprob=math.log(tail) if tail > 1e-12 else -math.inf,
            n_tokens=len(ids),
        )

    def _compute_rolling_logprob(self, text: str) -> RollingLogprob:
        self._backend.simulate_latency()
        ids = self._backend.tokenize(text)
        scored = [float(self._logits(ids[:i])[ids[i]]) for i in range(1, len(ids))]
        return RollingLogprob(
            token_ids=np.asarray(ids, dtype=np.int64),
            logprobs=np.asarray(scored, dtype=np.float64),
            n_tokens=len(ids),
        )

    def _compute_logprob_of(self, prompt: str, completion: str) -> float:
        self._backend.simulate_latency()
        p = self._backend.tokenize(prompt)
        full = self._backend.tokenize(prompt + completion)
        if len(full) <= len(p):
            raise InputError(
                f"completion {completion!r} adds no token to prompt {prompt[:40]!r}; "
                "give a non-empty completion"
            )
        return float(sum(self._logits(full[:i])[full[i]] for i in range(len(p), len(full))))

    def _compute_generation(
        self, prompt: str, max_new_tokens: int, stop: tuple[str, ...]
    ) -> Generation:
        self._backend.simulate_latency()
        ids = list(self._backend.tokenize(prompt))
        new: list[int] = []
        finish: FinishReason = "length"
        text = ""
        while len(new) < max_new_tokens:
            new.append(int(np.argmax(self._logits(tuple(ids + new)))))
            text, stopped = cut_at_stop(decode(new), stop)
            if stopped:
                finish = "stop"
                break
        return Generation(text=text, n_generated=len(new), finish=finish, n_tokens=len(ids))

    @staticmethod
    def _batch(
        items: Sequence[T], fn: Callable[[T], object]
    ) -> Callable[[list[int]], list[object]]:
        """The dummy's 'batched forward': one call computing each missed row."""
        return lambda idx: [fn(items[i]) for i in idx]

    # -- scoring: three lines of glue each -------------------------------------------

    def next_token_dist(self, prompt: str, *, top_k: int = DEFAULT_TOP_K) -> TokenDist:
        check_text(prompt)
        check_top_k(top_k)
        return self._inst.cached(
            "next_token_dist", self._id, prompt, top_k,
            lambda: self._compute_next_token_dist(prompt, top_k),
        )

    def rolling_logprob(self, text: str) -> RollingLogprob:
        check_text(text, "text")
        return self._inst.cached(
            "rolling_logprob", self._id, text, 0,
            lambda: self._compute_rolling_logprob(text),
        )

    def logprob_of(self, prompt: str, completion: str) -> float:
        check_text(prompt)
        check_text(completion, "completion")
        return self._inst.cached(
            "logprob_of", self._id, prompt + "\x00" + completion, 0,
            lambda: self._compute_logprob_of(prompt, completion),
        )

    def next_token_dist_batch(
        self, prompts: Sequence[str], *, top_k: int = DEFAULT_TOP_K
    ) -> list[TokenDist]:
        check_top_k(top_k)
        for p in prompts:
            check_text(p)
        return self._inst.cached_batch(
            "next_token_dist", self._id, prompts, top_k,
            self._batch(prompts, lambda p: self._compute_next_token_dist(p, top_k)),
        )

    def rolling_logprob_batch(self, texts: Sequence[str]) -> list[RollingLogprob]:
        for t in texts:
            check_text(t, "text")
        return self._inst.cached_batch(
            "rolling_logprob", self._id, texts, 0,
            self._batch(texts, self._compute_rolling_logprob),
        )

    def logprob_of_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        for p, c in pairs:
            check_text(p)
            check_text(c, "completion")
        return self._inst.cached_batch(
            "logprob_of", self._id, [p + "\x00" + c for p, c in pairs], 0,
            self._batch(pairs, lambda pc: self._compute_logprob_of(*pc)),
        )


    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> Generation:
        check_text(prompt)
        stops = check_generation(max_new_tokens, stop)
        return self._inst.cached(
            GENERATE_OP, self._id, prompt, 0,
            lambda: self._compute_generation(prompt, max_new_tokens, stops),
            key_params=(max_new_tokens, stops),
        )

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        for p in prompts:
            check_text(p)
        stops = check_generation(max_new_tokens, stop)
        return self._inst.cached_batch(
            GENERATE_OP, self._id, prompts, 0,
            self._batch(prompts, lambda p: self._compute_generation(p, max_new_tokens, stops)),
            key_params=(max_new_tokens, stops),
        )


def decode(ids: Sequence[int]) -> str:
    """The dummy's text for token ids: printable ASCII, one character per token."""
    return "".join(chr(32 + i % 95) for i in ids)


class DummyBackend:
    """Deterministic differential backend for tests and the no-torch path.

    ``view_class`` is the class of its views: a test double may subclass
    :class:`DummyView` to script some answers and set it on a subclass.
    """

    view_class: ClassVar[type[DummyView]] = DummyView

    def __init__(
        self,
        *,
        inst: BackendInstrumentation | None = None,
        seed: int = 0,
        vocab_size: int = 64,
        adapter_strength: float = 1.0,
        null_strength: float = 0.2,
        model_name: str = "dummy",
        adapter_name: str = "dummy-adapter",
        latency_s: float = 0.0,
    ) -> None:
        self.inst = inst if inst is not None else BackendInstrumentation(model_name=model_name)
        if not self.inst.model_name:
            self.inst.model_name = model_name
        self.seed = seed
        self.vocab_size = vocab_size
        self.adapter_strength = adapter_strength
        self.null_strength = null_strength
        self._model_name = model_name
        self._adapter_name = adapter_name
        self._active: str | None = None
        self.latency_s = latency_s

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def adapter_name(self) -> str:
        return self._adapter_name

    def simulate_latency(self) -> None:
        """Sleep ``latency_s`` per computed prompt, to stand in for a slow model in tests."""
        if self.latency_s > 0:
            time.sleep(self.latency_s)

    def tokenize(self, text: str) -> tuple[int, ...]:
        """Bytes folded into the vocabulary: deterministic and cheap."""
        return tuple(b % self.vocab_size for b in text.encode("utf-8"))

    def token_prefix(self, text: str, n_tokens: int) -> str:
        """The first ``n_tokens`` tokens (bytes) of ``text``, cycled when shorter; a
        character cut in half is dropped."""
        data = text.encode("utf-8")
        if n_tokens <= 0 or not data:
            return ""
        whole = repeated(text, -(-n_tokens // (len(data) + 1)) + 1).encode("utf-8")
        return whole[:n_tokens].decode("utf-8", errors="ignore")

    @contextmanager
    def _enter(self, view: DummyView) -> Iterator[DummyView]:
        if self._active is not None:
            raise ViewError(
                f"cannot enter view {view.id!r}: view {self._active!r} is still active; "
                "exit it first (one view at a time)"
            )

        def enter() -> None:
            self._active = view.id

        def leave() -> None:
            self._active = None

        with self.inst.view(view.id, enter=enter, exit=leave):
            yield view

    def base(self) -> AbstractContextManager[DummyView]:
        return self._enter(self.view_class(self, "base", 0.0, None, 0.0))

    def ft(self) -> AbstractContextManager[DummyView]:
        return self._enter(self.view_class(self, "ft", 1.0, None, 0.0))

    def scaled(self, lam: float) -> AbstractContextManager[DummyView]:
        return self._enter(self.view_class(self, scaled_view_id(lam), float(lam), None, 0.0))

    def null(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> AbstractContextManager[DummyView]:
        vid = null_view_id(seed, init_scale, rank_scale)
        return self._enter(
            self.view_class(self, vid, 0.0, seed, init_scale * math.sqrt(rank_scale))
        )

    def close(self) -> None:
        self.inst.close()


__all__ = ["DummyBackend", "DummyView", "decode"]
