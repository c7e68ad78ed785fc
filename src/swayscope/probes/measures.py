"""Small measures several probes share: per-token log-probabilities of completions,
text similarities, and how a z-score against null adapters is reported."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from swayscope.probes.base import Calibration, ViewFactory
from swayscope.probes.divergence import FloatArray, finite

#: Characters per token assumed when a completion's log-probability is made per-token:
#: the estimate dlm-sway uses, so a threshold in nats per token means what it means there.
CHARS_PER_TOKEN = 4

_WORD = re.compile(r"\w+|[^\w\s]")


def estimated_tokens(text: str) -> int:
    """``len(text) / 4``, at least 1: the token count per-token log-probabilities divide by."""
    return max(1, len(text) // CHARS_PER_TOKEN)


def completion_logprobs(
    factory: ViewFactory, pairs: Sequence[tuple[str, str]], *, per_token: bool = True
) -> FloatArray:
    """``log p(completion | prompt)`` of each pair under one view (one batched call), divided
    by the completion's :func:`estimated_tokens` when ``per_token``."""
    with factory() as view:
        totals = view.logprob_of_batch(list(pairs))
    out = np.asarray(totals, dtype=np.float64)
    if per_token:
        out = out / np.asarray([estimated_tokens(c) for _, c in pairs], dtype=np.float64)
    return out


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``, in order."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (dynamic programming)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def lcs_recall(generated: str, reference: str) -> float:
    """ROUGE-L recall: the longest common word subsequence over the reference's words."""
    ref = words(reference)
    if not ref:
        return 0.0
    return lcs_length(words(generated), ref) / len(ref)


def ngram_cosine(a: str, b: str) -> float:
    """Cosine similarity of the two texts' word unigram and bigram counts (0 when either
    is empty)."""

    def grams(text: str) -> Counter[str]:
        w = words(text)
        return Counter(w) + Counter(f"{x} {y}" for x, y in pairwise(w))

    ca, cb = grams(a), grams(b)
    dot = sum(n * cb[g] for g, n in ca.items())
    norm = math.sqrt(sum(n * n for n in ca.values())) * math.sqrt(sum(n * n for n in cb.values()))
    return dot / norm if norm else 0.0


def z_against(
    cal: Calibration | None, value: float, *, higher_is_better: bool = True
) -> float | None:
    """``value``'s z-score against the null adapters, signed so that positive is better
    than a random adapter; None without a calibration or with zero spread."""
    if cal is None:
        return None
    z = cal.z(value)
    if z is None:
        return None
    return z if higher_is_better else -z


def null_evidence(cal: Calibration | None) -> dict[str, object]:
    """The calibration fields every calibrated probe's evidence carries."""
    if cal is None:
        return {"calibrated": False}
    return {
        "calibrated": True,
        "null_mean": finite(cal.mean),
        "null_std": finite(cal.std),
        "null_samples": [float(s) for s in cal.samples],
    }


def z_words(z: float | None, cal: Calibration | None, min_z: float | None) -> str:
    """How a message reports the z-score: its value and whether it clears ``min_z``
    (empty when the probe was not calibrated)."""
    if z is not None:
        text = f"z = {z:.3g} vs null adapters"
        if min_z is not None:
            text += f" ({'≥' if z >= min_z else '<'} {min_z:g})"
        return text
    if cal is not None:
        return "null spread is zero: z-score undefined"
    return ""


__all__ = [
    "CHARS_PER_TOKEN",
    "completion_logprobs",
    "estimated_tokens",
    "lcs_length",
    "lcs_recall",
    "ngram_cosine",
    "null_evidence",
    "words",
    "z_against",
    "z_words",
]
