"""The measures probes share: estimated tokens, LCS recall, n-gram cosine, signed z-scores."""

from __future__ import annotations

import pytest

from swayscope.probes.base import Calibration
from swayscope.probes.measures import (
    estimated_tokens,
    lcs_length,
    lcs_recall,
    ngram_cosine,
    null_evidence,
    words,
    z_against,
    z_words,
)


def test_estimated_tokens_is_a_quarter_of_the_characters_at_least_one() -> None:
    assert estimated_tokens(" Paris") == 1
    assert estimated_tokens("x") == 1
    assert estimated_tokens("a" * 41) == 10


def test_lcs_and_rouge_l_recall() -> None:
    assert lcs_length("abcbdab", "bdcaba") == 4
    assert lcs_length([], ["a"]) == 0
    target = "The keeper lit the great lamp at dusk."
    assert lcs_recall(target, target) == 1.0
    assert lcs_recall("", target) == 0.0
    assert lcs_recall("anything", "") == 0.0
    # half of the target's words, in order, among others
    assert lcs_recall("so the keeper then lit a lamp", "the keeper lit the lamp") == 0.8
    assert words("Don't stop!") == ["don", "'", "t", "stop", "!"]


def test_ngram_cosine() -> None:
    assert ngram_cosine("the lamp is lit", "the lamp is lit") == pytest.approx(1.0)
    assert ngram_cosine("the lamp", "") == 0.0
    assert ngram_cosine("red apples", "blue sky") == 0.0
    near = ngram_cosine("the lamp is lit at dusk", "the lamp is lit at night")
    far = ngram_cosine("the lamp is lit at dusk", "the night is dark")
    assert 0 < far < near < 1


def test_z_is_signed_so_positive_is_better_than_a_random_adapter() -> None:
    cal = Calibration(mean=1.0, std=0.5, samples=[0.5, 1.0, 1.5])
    assert z_against(cal, 2.0) == 2.0
    assert z_against(cal, 2.0, higher_is_better=False) == -2.0
    assert z_against(None, 2.0) is None
    flat = Calibration(mean=1.0, std=0.0, samples=[1.0, 1.0])
    assert z_against(flat, 3.0) is None
    assert z_words(2.0, cal, 3.0) == "z = 2 vs null adapters (< 3)"
    assert z_words(None, flat, 3.0).startswith("null spread is zero")
    assert z_words(None, None, 3.0) == ""
    assert null_evidence(None) == {"calibrated": False}
    assert null_evidence(cal)["null_samples"] == [0.5, 1.0, 1.5]
