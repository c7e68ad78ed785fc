"""perplexity_shift: packaged text, chunking, shift direction, verdicts, batching."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext
from swayscope.probes.perplexity_shift import (
    PerplexityShiftProbe,
    PerplexityShiftSpec,
    packaged_text,
    split_chunks,
)


def test_packaged_text_is_shipped() -> None:
    text = packaged_text()
    assert 500 < len(text) < 20_000
    assert "Four score and seven years ago" in text


def test_chunks_are_whole_sentences() -> None:
    text = packaged_text()
    chunks = split_chunks(text, max_chunks=16, min_chars=120)
    assert 2 <= len(chunks) <= 16
    assert " ".join(chunks) == " ".join(text.split())
    assert all(c.rstrip().endswith((".", "!", "?")) for c in chunks)
    assert all(len(c) >= 120 for c in chunks[:-1])
    assert split_chunks(text, max_chunks=2, min_chars=120) == chunks[:2]
    assert split_chunks("One. Two. Three.", max_chunks=5, min_chars=1) == ["One.", "Two.", "Three."]
    assert split_chunks("No sentence end", max_chunks=5, min_chars=100) == ["No sentence end"]


def test_real_adapter_shifts_likelihood() -> None:
    backend = DummyBackend()
    r = PerplexityShiftProbe(PerplexityShiftSpec()).run(ProbeContext(backend=backend))
    assert r.verdict == "pass"
    ev = r.evidence
    assert r.score == pytest.approx(ev["ft_mean_logprob"] - ev["base_mean_logprob"])
    assert r.score is not None and r.score < 0  # the dummy's delta is noise: text less likely
    assert ev["direction"] == "ft less likely"
    assert ev["ft_perplexity"] > ev["base_perplexity"]
    assert ev["ci_low"] <= sum(ev["per_chunk_shift"]) / ev["n_chunks"] <= ev["ci_high"]
    assert ev["source"] == "perplexity.txt"
    assert ev["n_tokens"] > 1000
    json.dumps(r.to_dict(), allow_nan=False)
    # one batched rolling_logprob call per view
    assert backend.inst.stats.forward_calls == 2
    assert backend.inst.stats.max_batch_size == ev["n_chunks"]


def test_no_adapter_warns() -> None:
    backend = DummyBackend(adapter_strength=0.0)
    r = PerplexityShiftProbe(PerplexityShiftSpec()).run(ProbeContext(backend=backend))
    assert r.verdict == "warn"
    assert r.score == 0.0


def test_custom_text_and_threshold() -> None:
    spec = PerplexityShiftSpec(text="A cat sat. The dog ran far away.", min_chunk_chars=5)
    r = PerplexityShiftProbe(spec).run(ProbeContext(backend=DummyBackend()))
    assert r.evidence["n_chunks"] == 2
    assert r.evidence["source"] == "spec text"
    big = PerplexityShiftSpec(threshold=100.0)
    assert PerplexityShiftProbe(big).run(ProbeContext(backend=DummyBackend())).verdict == "warn"


def test_statistic_and_z() -> None:
    backend = DummyBackend()
    probe = PerplexityShiftProbe(PerplexityShiftSpec(min_z=3.0))
    ctx = ProbeContext(backend=backend)
    stat = probe.statistic(ctx, backend.ft)
    assert stat is not None
    r = probe.run(ctx)
    assert r.score is not None and stat == pytest.approx(abs(r.score))
    ctx.calibration["perplexity_shift"] = Calibration(mean=stat, std=1.0, samples=[stat, stat])
    r2 = probe.run(ctx)
    assert r2.z_score == pytest.approx(0.0, abs=1e-9)
    assert r2.verdict == "warn"  # min_z set and not reached


def test_no_more_than_random_adapters_only_warns_by_default() -> None:
    """Calibrated, the default asks z ≥ 3 as delta_kl does: a random adapter that moves the
    text's likelihood as much as other random adapters do is not a finding."""
    backend = DummyBackend()
    probe = PerplexityShiftProbe(PerplexityShiftSpec())
    assert probe.spec.min_z == 3.0
    ctx = ProbeContext(backend=backend)
    stat = probe.statistic(ctx, backend.ft)
    assert stat is not None
    ctx.calibration["perplexity_shift"] = Calibration(mean=stat, std=stat, samples=[0.0, stat])
    r = probe.run(ctx)
    assert r.z_score == pytest.approx(0.0, abs=1e-9)
    assert r.verdict == "warn" and "(< 3)" in r.message
    ctx.calibration["perplexity_shift"] = Calibration(mean=0.0, std=stat / 10, samples=[0.0])
    far = probe.run(ctx)
    assert far.verdict == "pass" and "(≥ 3)" in far.message
    shown_only = PerplexityShiftProbe(PerplexityShiftSpec(min_z=None))
    ctx.calibration["perplexity_shift"] = Calibration(mean=stat, std=stat, samples=[0.0, stat])
    assert shown_only.run(ctx).verdict == "pass"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"text": "  "}, "text is blank"),
        ({"max_chunks": 0}, "max_chunks"),
        ({"threshold": float("nan")}, "threshold"),
        ({"file": "x.txt"}, "file"),
    ],
)
def test_spec_validation(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        PerplexityShiftSpec.model_validate({"kind": "perplexity_shift", **fields})
    assert needle in str(info.value)
