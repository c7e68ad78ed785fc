"""Prompt identities: a full digest for the cache, a short hash for what leaves the process.

The cache keys on the full 160-bit SHA-1 digest of the prompt: two prompts never
share an entry by accident (the 48-bit prefix v0 keyed on collides after ~16 M
prompts, and can be forced in a minute; the full digest needs ~2^80 prompts, and
a crafted pair costs far more than writing the spec by hand). Telemetry carries
a 12-hex hash: by default the v0 one (the digest's first 12 hex digits, stable
across runs and tools, computed from the same digest at no extra cost), or, with
a key, an HMAC so a reader of the telemetry cannot confirm a guessed prompt
without the key.
"""

from __future__ import annotations

import hashlib
import hmac

#: Hex characters of the hash telemetry carries.
PROMPT_HASH_CHARS = 12
#: Environment variable a key for the keyed prompt hash is read from.
PROMPT_HASH_KEY_ENV = "SWAYSCOPE_PROMPT_HASH_KEY"


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate must not crash a lookup; input checks reject it later.
    return text.encode("utf-8", "surrogatepass")


def prompt_hash(prompt: str) -> str:
    """The v0 12-hex prompt hash (unkeyed SHA-1 prefix): stable, but guessable prompts
    can be confirmed from it. See :class:`PromptHasher` for the keyed form."""
    return hashlib.sha1(_utf8(prompt), usedforsecurity=False).hexdigest()[:PROMPT_HASH_CHARS]


def cache_digest(prompt: str) -> bytes:
    """Full SHA-1 digest of the prompt: what the cache keys on (never shown as a whole)."""
    return hashlib.sha1(_utf8(prompt), usedforsecurity=False).digest()


class PromptHasher:
    """The 12-hex hash telemetry carries: v0's by default, an HMAC-SHA256 with ``key``."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | str | None = None) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._key = key or None

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def __call__(self, prompt: str, digest: bytes | None = None) -> str:
        """The hash of ``prompt``; pass its :func:`cache_digest` when at hand (saves a hash)."""
        if self._key is None:
            if digest is None:
                return prompt_hash(prompt)
            return digest.hex()[:PROMPT_HASH_CHARS]
        mac = hmac.new(self._key, _utf8(prompt), hashlib.sha256)
        return mac.hexdigest()[:PROMPT_HASH_CHARS]

    def __repr__(self) -> str:
        return f"PromptHasher(keyed={self.keyed})"


__all__ = [
    "PROMPT_HASH_CHARS",
    "PROMPT_HASH_KEY_ENV",
    "PromptHasher",
    "cache_digest",
    "prompt_hash",
]
