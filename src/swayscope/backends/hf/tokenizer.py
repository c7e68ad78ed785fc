"""Text to the token ids the model scores, and the checks every text passes first.

The Rust tokenizer behind a transformers fast tokenizer is called directly when it
agrees with transformers on a few sample texts (it is much cheaper per call);
otherwise every text goes through the transformers tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swayscope.backends.api import check_text, repeated
from swayscope.errors import InputError

#: Texts the fast path must tokenize exactly like transformers before it is used.
_AGREEMENT_SAMPLES = ("Hello, world!", " leading space", "naïve café ✓ 123", "a\nb\tc  d")


def _unnamed(text: str) -> str:
    return f"of {len(text)} characters"


def _fast_encoder(tokenizer: Any) -> Callable[[str], Any] | None:
    """The Rust tokenizer's ``encode``, when it agrees with transformers on the samples."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    encode: Callable[[str], Any] | None = getattr(backend, "encode", None)
    if encode is None:
        return None
    try:
        agree = all(
            encode(t).ids == tokenizer(t, add_special_tokens=True)["input_ids"]
            for t in _AGREEMENT_SAMPLES
        )
    except Exception:
        agree = False
    return encode if agree else None


class TextEncoder:
    """Tokenizes texts (special tokens such as BOS included) and checks them for scoring.

    Args:
        tokenizer: a transformers tokenizer.
        context_length: the model's context in tokens (``None``: unknown, unchecked).
    """

    def __init__(
        self,
        tokenizer: Any,
        context_length: int | None,
        name: Callable[[str], str] = _unnamed,
    ) -> None:
        """``name`` says which text an error is about without quoting it (texts may be
        private): the backend passes the instrumentation's prompt hash."""
        self.tokenizer = tokenizer
        self._name = name
        self.context_length = context_length
        self._fast_encode = _fast_encoder(tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        #: The id padding is filled with (masked out, never scored).
        self.pad_id = int(pad) if pad is not None else 0

    @property
    def fast(self) -> bool:
        """Whether texts go straight to the Rust tokenizer."""
        return self._fast_encode is not None

    def tokenize(self, text: str) -> list[int]:
        """Token ids the model scores for ``text`` (special tokens such as BOS included)."""
        if self._fast_encode is not None:
            fast: list[int] = self._fast_encode(text).ids
            return fast
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    def token_prefix(self, text: str, n_tokens: int) -> str:
        """The start of ``text`` its first ``n_tokens`` tokens cover (special tokens not
        counted), ``text`` repeated space-separated when it has fewer tokens."""
        if n_tokens <= 0 or not text:
            return ""
        bare = self._bare_tokens(text)
        if not bare:
            return ""
        whole = repeated(text, -(-n_tokens // len(bare)) + 1)
        if self._fast_encode is not None:
            backend = self.tokenizer.backend_tokenizer
            offsets = backend.encode(whole, add_special_tokens=False).offsets
            return whole[: offsets[min(n_tokens, len(offsets)) - 1][1]]
        ids = self._bare_tokens(whole)[:n_tokens]
        decoded: str = self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        return decoded

    def _bare_tokens(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def checked_ids(self, text: str) -> list[int]:
        """``text``'s token ids; :class:`InputError` when there are none or too many."""
        ids = self.tokenize(text)
        if not ids:
            raise InputError(
                f"text {self._name(text)} tokenizes to no tokens; give more text"
            )
        if self.context_length is not None and len(ids) > self.context_length:
            raise InputError(
                f"text {self._name(text)} has {len(ids)} tokens, more than the model's "
                f"context of "
                f"{self.context_length}; shorten it"
            )
        return ids

    def completion_start(self, prompt: str, completion: str) -> int:
        """Index of the first token of ``prompt + completion`` that the completion affects."""
        check_text(prompt)
        check_text(completion, "completion")
        p = self.tokenize(prompt)
        full = self.tokenize(prompt + completion)
        k = 0
        for a, b in zip(p, full, strict=False):
            if a != b:
                break
            k += 1
        if len(full) <= k:
            raise InputError(
                f"completion {self._name(completion)} adds no token after prompt "
                f"{self._name(prompt)}; "
                "give a completion that tokenizes to at least one token"
            )
        if k == 0:
            raise InputError(
                f"completion {self._name(completion)} merges into the first token of prompt "
                f"{self._name(prompt)}, so nothing before it can be scored; give a longer prompt"
            )
        return k


__all__ = ["TextEncoder"]
