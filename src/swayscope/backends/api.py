"""Types every backend returns and the protocols probes program against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from swayscope.errors import InputError, shown
from swayscope.instrumentation import BackendInstrumentation, view_kind_of
from swayscope.instrumentation.codec import durable
from swayscope.instrumentation.vocabulary import DEFAULT_TOP_K, GENERATE_OP

#: Largest seed accepted anywhere (null adapters use ``seed .. seed + n - 1``), so every
#: RNG that receives one (numpy, torch) takes it without overflow.
MAX_SEED = 2**32 - 1

#: Token budget of one model call (prompts times padded length), unless the spec says otherwise.
DEFAULT_MAX_BATCH_TOKENS = 8192

#: Prompts in one model call at most, unless the spec says otherwise.
DEFAULT_MAX_BATCH_SIZE = 32

#: Null adapters a backend keeps built at once (each is one adapter's worth of weights).
DEFAULT_MAX_NULL_ADAPTERS = 8

#: Byte budget of a backend's shared-prefix store (keys and values kept between calls).
DEFAULT_PREFIX_CACHE_BYTES = 256 * 1024 * 1024

#: New tokens a greedy generation produces at most, unless asked otherwise.
DEFAULT_MAX_NEW_TOKENS = 64

#: The most new tokens one generation may ask for.
MAX_NEW_TOKENS_LIMIT = 4096

#: Why a generation ended: a stop string, the model's end-of-sequence token, or the limit.
FinishReason = Literal["stop", "eos", "length"]
#: The finest share of a CPU or GPU a pool's worker may reserve: Ray counts resources in
#: ten-thousandths (a smaller share is refused by Ray, with a traceback).
RESOURCE_UNIT = 0.0001


@durable
@dataclass(frozen=True, slots=True)
class TokenDist:
    """Next-token distribution, truncated to the top k tokens.

    ``token_ids``/``logprobs`` are sorted by descending probability;
    ``tail_logprob`` is the log of the probability mass outside them
    (``-inf`` when the top k cover the whole vocabulary).
    """

    token_ids: npt.NDArray[np.int64]
    logprobs: npt.NDArray[np.float64]
    vocab_size: int
    tail_logprob: float
    n_tokens: int | None = None

    @property
    def top_k(self) -> int:
        return int(self.token_ids.shape[0])

    def truncate(self, top_k: int) -> TokenDist:
        """The same distribution cut to ``top_k`` tokens, the rest folded into the tail."""
        if top_k >= self.top_k:
            return self
        kept = self.logprobs[:top_k]
        dropped = np.exp(self.logprobs[top_k:]).sum()
        tail = float(np.exp(self.tail_logprob)) + float(dropped)
        return TokenDist(
            token_ids=self.token_ids[:top_k],
            logprobs=kept,
            vocab_size=self.vocab_size,
            tail_logprob=math.log(tail) if tail > 0 else -math.inf,
            n_tokens=self.n_tokens,
        )


@durable
@dataclass(frozen=True, slots=True)
class RollingLogprob:
    """Log-probability of each token of a text given the tokens before it."""

    token_ids: npt.NDArray[np.int64]
    logprobs: npt.NDArray[np.float64]
    """One entry per scored token (every token but the first)."""
    n_tokens: int

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())

    @property
    def mean(self) -> float:
        return float(self.logprobs.mean()) if self.logprobs.size else 0.0

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean)


@durable
@dataclass(frozen=True, slots=True)
class Generation:
    """A greedy continuation of a prompt."""

    text: str
    """The new text only (not the prompt), cut before the first stop string, special
    tokens left out."""
    n_generated: int
    """Tokens generated: up to and including the one that completed a stop string or
    was the end-of-sequence token."""
    finish: FinishReason
    n_tokens: int | None = None
    """Tokens of the prompt (what telemetry counts as input tokens)."""


def check_generation(max_new_tokens: int, stop: Sequence[str]) -> tuple[str, ...]:
    """The stop strings as one canonical tuple (sorted, distinct: which one occurs first
    does not depend on their order), after checking both arguments."""
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT
    ):
        raise InputError(
            f"max_new_tokens must be an integer 1..{MAX_NEW_TOKENS_LIMIT}; got "
            f"{shown(max_new_tokens)}. Try max_new_tokens={DEFAULT_MAX_NEW_TOKENS}."
        )
    if isinstance(stop, str):
        raise InputError(
            f"stop must be a list of strings, not one string; got {shown(stop)}: "
            f"write stop=[{stop!r}]"
        )
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise InputError(f"stop[{i}] must be a non-empty string; got {shown(s)}")
    return tuple(sorted(set(stop)))


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) its first stop string, and whether one occurred."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not found:
        return text, False
    return text[: min(found)], True


@runtime_checkable
class ScoringView(Protocol):
    """One way of running the model (base, ft, scaled, null); all scoring is cached."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def next_token_dist(self, prompt: str, *, top_k: int = DEFAULT_TOP_K) -> TokenDist: ...

    def rolling_logprob(self, text: str) -> RollingLogprob: ...

    def logprob_of(self, prompt: str, completion: str) -> float: ...

    def next_token_dist_batch(
        self, prompts: Sequence[str], *, top_k: int = DEFAULT_TOP_K
    ) -> list[TokenDist]: ...

    def rolling_logprob_batch(self, texts: Sequence[str]) -> list[RollingLogprob]: ...

    def logprob_of_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> Generation:
        """Greedy continuation of ``prompt``: at most ``max_new_tokens`` new tokens, ended
        early by the end-of-sequence token or a stop string (the text is cut before it)."""
        ...

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: Sequence[str] = (),
    ) -> list[Generation]:
        """:meth:`generate` for each prompt, batched; each answer is the one it gets alone."""
        ...


class ViewIdentity:
    """The ``id``/``kind`` half of :class:`ScoringView` that every backend's view shares."""

    _id: str

    @property
    def id(self) -> str:
        return self._id

    @property
    def kind(self) -> str:
        return view_kind_of(self._id)


class DifferentialBackend(Protocol):
    """A base model and its adapter, seen through views; one view active at a time."""

    inst: BackendInstrumentation

    @property
    def model_name(self) -> str: ...

    @property
    def adapter_name(self) -> str: ...

    def base(self) -> AbstractContextManager[ScoringView]: ...

    def ft(self) -> AbstractContextManager[ScoringView]: ...

    def scaled(self, lam: float) -> AbstractContextManager[ScoringView]: ...

    def null(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> AbstractContextManager[ScoringView]: ...

    def token_prefix(self, text: str, n_tokens: int) -> str:
        """The start of ``text`` that its first ``n_tokens`` tokens cover (special tokens
        not counted); ``text`` is repeated, space-separated, when it has fewer tokens."""
        ...

    def close(self) -> None: ...


def repeated(text: str, times: int) -> str:
    """``text`` ``times`` times, space-separated (how a short context text is cycled)."""
    return " ".join([text] * max(1, times))


@runtime_checkable
class AdapterSwapping(Protocol):
    """A backend that can put another adapter for the same base model in place of its own,
    without loading the base model again (what a checkpoint sweep runs on)."""

    def swap_adapter(self, adapter_path: Path, *, name: str | None = None) -> None:
        """Attach ``adapter_path`` in place of the current adapter (``name``: what runs
        report as the adapter); raise :class:`~swayscope.errors.AdapterLoadError` with the
        previous adapter still in place when it cannot be loaded."""
        ...


def scaled_view_id(lam: float) -> str:
    """Canonical id: λ = 0 is ``base``, λ = 1 is ``ft``, else ``scaled_<repr(λ)>`` (exact)."""
    lam = float(lam)
    if not math.isfinite(lam):
        raise InputError(f"adapter scale λ must be a finite number; got {lam!r}")
    if lam == 0.0:
        return "base"
    if lam == 1.0:
        return "ft"
    return f"scaled_{lam!r}"


def null_view_id(seed: int, init_scale: float = 1.0, rank_scale: float = 1.0) -> str:
    """Canonical id of a seeded null adapter; every parameter that changes it is in the id."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(
            f"null adapter seed must be an integer 0..{MAX_SEED}; got {shown(seed)}"
        )
    for name, value in (("init_scale", init_scale), ("rank_scale", rank_scale)):
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"null adapter {name} must be a positive number; got {value!r}")
    return f"null_{seed}_i{float(init_scale)!r}_r{float(rank_scale)!r}"


def check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise InputError(
            f"top_k must be a positive integer; got {top_k!r}. Try top_k={DEFAULT_TOP_K}."
        )
    return top_k


def check_text(text: str, what: str = "prompt") -> str:
    """``text`` if it is usable model input. Messages never quote the text (it may be private)."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string; got {type(text).__name__}")
    if not text.strip():
        raise InputError(
            f"{what} is empty or only whitespace ({len(text)} characters); give at least one "
            "non-space character"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} is not valid Unicode: a lone surrogate at character {exc.start}; "
            "fix how the text was decoded"
        ) from None
    return text


__all__ = [
    "DEFAULT_MAX_BATCH_TOKENS",
    "DEFAULT_MAX_NEW_TOKENS",
    "GENERATE_OP",
    "MAX_NEW_TOKENS_LIMIT",
    "DEFAULT_PREFIX_CACHE_BYTES",
    "DEFAULT_TOP_K",
    "MAX_SEED",
    "RESOURCE_UNIT",
    "AdapterSwapping",
    "DifferentialBackend",
    "FinishReason",
    "Generation",
    "RollingLogprob",
    "ScoringView",
    "TokenDist",
    "ViewIdentity",
    "check_generation",
    "check_text",
    "check_top_k",
    "cut_at_stop",
    "null_view_id",
    "repeated",
    "scaled_view_id",
]
