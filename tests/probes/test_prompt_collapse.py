"""prompt_collapse: divergence vs neutral-context length, half-life, verdicts, sharing."""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from swayscope.backends.dummy import DummyBackend, DummyView
from swayscope.probes.base import ProbeContext
from swayscope.probes.defaults import (
    DEFAULT_COLLAPSE_PROMPTS,
    DEFAULT_CONTEXT_TOKENS,
    NEUTRAL_CONTEXT,
    context_words,
)
from swayscope.probes.delta_kl import DeltaKLProbe, DeltaKLSpec
from swayscope.probes.prompt_collapse import PromptCollapseProbe, PromptCollapseSpec, half_life


class FadingView(DummyView):
    """The adapter's logit delta decays with the prefix length (τ = 30 tokens)."""

    def _logits(self, prefix: tuple[int, ...]) -> npt.NDArray[np.float64]:
        full = self._lam
        self._lam = full * math.exp(-len(prefix) / 30.0)
        try:
            return super()._logits(prefix)
        finally:
            self._lam = full


class FadingBackend(DummyBackend):
    def ft(self) -> AbstractContextManager[DummyView]:
        return self._enter(FadingView(self, "ft", 1.0, None, 0.0))


def test_dummy_effect_survives_context() -> None:
    r = PromptCollapseProbe(PromptCollapseSpec()).run(ProbeContext(backend=DummyBackend()))
    assert r.verdict == "pass"
    ev = r.evidence
    assert ev["context_tokens"] == list(DEFAULT_CONTEXT_TOKENS)
    assert len(ev["divergence_by_context"]) == len(DEFAULT_CONTEXT_TOKENS)
    assert ev["half_life_unit"] == "tokens"
    assert ev["tokens_added"][0] == 0.0
    assert ev["tokens_added"] == sorted(ev["tokens_added"])
    assert ev["half_life"] is None  # the dummy's delta does not fade with context
    assert r.score == ev["retention"] and r.score is not None and r.score > 0.5
    json.dumps(r.to_dict(), allow_nan=False)


def test_collapsing_adapter_warns_with_half_life() -> None:
    spec = PromptCollapseSpec(min_half_life=200, context_words=(0, 16, 32, 64, 128))
    r = PromptCollapseProbe(spec).run(ProbeContext(backend=FadingBackend()))
    assert r.verdict == "warn"
    ev = r.evidence
    hl = ev["half_life_tokens"]
    assert hl is not None and 0 < hl < 200
    assert ev["half_life_words"] is not None and ev["half_life_words"] < hl
    assert r.score is not None and r.score < 0.2
    assert "collapses" in r.message


def test_fading_adapter_warns_on_retention() -> None:
    r = PromptCollapseProbe(PromptCollapseSpec(min_half_life=0)).run(
        ProbeContext(backend=FadingBackend())
    )
    assert r.verdict == "warn"
    assert "retention" in r.message and "fades" in r.message
    assert r.evidence["min_retention"] == 0.1


def test_no_adapter_fails() -> None:
    backend = DummyBackend(adapter_strength=0.0)
    r = PromptCollapseProbe(PromptCollapseSpec()).run(ProbeContext(backend=backend))
    assert r.verdict == "fail"
    assert r.score is None


def test_an_effect_below_threshold_only_warns() -> None:
    """A random adapter's tiny effect "surviving" context is no finding (the SmolLM2 demo's
    random control): below delta_kl's threshold the verdict is warn, whatever the retention."""
    weak = DummyBackend(adapter_strength=0.1)
    r = PromptCollapseProbe(PromptCollapseSpec()).run(ProbeContext(backend=weak))
    assert r.verdict == "warn"
    assert "too small an effect" in r.message
    assert r.evidence["threshold"] == 0.005
    assert 0 < r.evidence["divergence_by_context"][0] < 0.005
    assert r.score is not None and r.score > 0.5  # it does survive; it is just too small
    lowered = PromptCollapseSpec(threshold=0.0)
    assert PromptCollapseProbe(lowered).run(ProbeContext(backend=weak)).verdict == "pass"
    kl = PromptCollapseProbe(PromptCollapseSpec(divergence="kl")).run(
        ProbeContext(backend=DummyBackend())
    )
    assert kl.evidence["threshold"] == 0.02


def test_two_batched_calls_and_length_0_shared_with_delta_kl() -> None:
    backend = DummyBackend()
    ctx = ProbeContext(backend=backend)
    DeltaKLProbe(DeltaKLSpec()).run(ctx)
    s = backend.inst.stats
    calls, hits = s.forward_calls, s.cache_hits
    PromptCollapseProbe(PromptCollapseSpec()).run(ctx)
    assert s.forward_calls == calls + 2  # one batch per view
    n = len(DEFAULT_COLLAPSE_PROMPTS)
    assert s.cache_hits == hits + 2 * n  # bare prompts, base and ft
    assert s.max_batch_size == n * (len(DEFAULT_CONTEXT_TOKENS) - 1)


def test_prompts_at() -> None:
    spec = PromptCollapseSpec(prompts=("Hi",), context_text="a b c", context_words=(0, 2))
    probe = PromptCollapseProbe(spec)
    assert probe.prompts_at(0) == ["Hi"]
    assert probe.prompts_at(2) == ["a b\n\nHi"]
    assert probe.prompts_at(5) == ["a b c a b\n\nHi"]
    assert len(context_words(128).split()) == 128
    assert context_words(3) == " ".join(NEUTRAL_CONTEXT.split()[:3])


def test_half_life_helper() -> None:
    x = np.array([0.0, 10.0, 20.0])
    assert half_life(x, np.array([0.1, 0.08, 0.04])) == pytest.approx(17.5)
    assert half_life(x, np.array([0.1, 0.05, 0.01])) == pytest.approx(10.0)
    assert half_life(x, np.array([0.1, 0.09, 0.08])) is None


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"context_words": [16, 32]}, "must be 0"),
        ({"context_words": [0]}, "at least 2"),
        ({"context_words": [0, 32, 16]}, "strictly increasing"),
        ({"context_words": [0, 0, 16]}, "strictly increasing"),
        ({"context_text": "   "}, "no words"),
        ({"prompts": []}, "prompts is empty"),
        ({"min_half_life": -1}, "min_half_life"),
        ({"min_retention": 1.5}, "min_retention"),
        ({"half_life": 3}, "half_life"),
    ],
)
def test_spec_validation(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        PromptCollapseSpec.model_validate({"kind": "prompt_collapse", **fields})
    assert needle in str(info.value)


def test_context_in_tokens_is_cut_on_the_backends_token_ids() -> None:
    backend = DummyBackend()  # one token per UTF-8 byte
    probe = PromptCollapseProbe(PromptCollapseSpec(prompts=("Hi",), context_text="a b c"))
    assert probe.prompts_at(3, backend) == ["a b\n\nHi"]
    assert probe.prompts_at(7, backend) == ["a b c a\n\nHi"]  # repeated when short
    assert probe.prompts_at(0, backend) == ["Hi"]
    with pytest.raises(ValueError, match="tokenizer"):
        probe.prompts_at(3)
    r = PromptCollapseProbe(PromptCollapseSpec(context_tokens=(0, 64, 128))).run(
        ProbeContext(backend=backend)
    )
    ev = r.evidence
    assert ev["context_unit"] == "tokens" and ev["context_tokens"] == [0, 64, 128]
    assert ev["context_words"] is None
    assert ev["tokens_added"] == [0.0, 66.0, 130.0]  # the context, then the separator's 2 bytes


class GrowingView(DummyView):
    """The adapter's logit delta grows with the prefix length."""

    def _logits(self, prefix: tuple[int, ...]) -> npt.NDArray[np.float64]:
        full = self._lam
        self._lam = full * (0.1 + len(prefix) / 30.0)
        try:
            return super()._logits(prefix)
        finally:
            self._lam = full


class GrowingBackend(DummyBackend):
    def ft(self) -> AbstractContextManager[DummyView]:
        return self._enter(GrowingView(self, "ft", 1.0, None, 0.0))


def test_divergence_growing_with_context_is_said_in_words() -> None:
    r = PromptCollapseProbe(PromptCollapseSpec()).run(ProbeContext(backend=GrowingBackend()))
    assert r.verdict == "pass"
    assert r.score is not None and r.score >= 1.5
    assert r.evidence["trend"] == "grows"
    assert "divergence grows with context" in r.message
    assert "moves the model more after neutral text" in r.message
    steady = PromptCollapseProbe(PromptCollapseSpec()).run(ProbeContext(backend=DummyBackend()))
    assert steady.evidence["trend"] == "holds" and "grows" not in steady.message


def test_context_words_is_a_deprecated_alias(caplog: pytest.LogCaptureFixture) -> None:
    spec = PromptCollapseSpec(context_words=(0, 8, 16))
    assert "deprecated" in caplog.text and "context_tokens" in caplog.text
    assert spec.unit == "words" and spec.lengths == (0, 8, 16)
    r = PromptCollapseProbe(spec).run(ProbeContext(backend=DummyBackend()))
    assert r.evidence["context_words"] == [0, 8, 16] and r.evidence["context_tokens"] is None
    with pytest.raises(ValidationError, match="not both"):
        PromptCollapseSpec(context_words=(0, 8), context_tokens=(0, 8))
