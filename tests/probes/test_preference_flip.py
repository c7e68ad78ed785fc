"""preference_flip: chosen-vs-rejected margins, flip rate of base-wrong triples, sources."""

from __future__ import annotations

import json

import pytest
from probe_scripts import Script, scripted_backend

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext, ProbeResult
from swayscope.probes.preference_flip import PreferenceFlipProbe, PreferenceFlipSpec
from swayscope.probes.sections import TrainingDocument

TRIPLES = [
    {"prompt": f"Question {i}:", "chosen": f" good answer {i}", "rejected": f" bad answer {i}"}
    for i in range(5)
]


def margins(base: list[float], ft: list[float]) -> Script:
    """log p(chosen) - log p(rejected) per triple (by its number) under base and ft."""

    def logprob(view: str, prompt: str, completion: str) -> float:
        i = int(prompt.split()[1].rstrip(":"))
        margin = (ft if view == "ft" else base)[i]
        return margin if "good" in completion else 0.0

    return Script(logprob=logprob)


def run(backend: DummyBackend, doc: TrainingDocument | None = None, **spec: object) -> ProbeResult:
    probe = PreferenceFlipProbe(PreferenceFlipSpec.model_validate(spec))
    return probe.run(ProbeContext(backend=backend, document=doc))


def test_the_flip_rate_counts_only_triples_base_gets_wrong() -> None:
    script = margins(base=[-1, -1, -1, -1, 2], ft=[1, 1, 1, -0.5, -3])
    r = run(scripted_backend(script), triples=TRIPLES)
    assert r.evidence["base_wrong"] == 4
    assert r.evidence["flipped"] == 3
    assert r.score == pytest.approx(0.75)
    assert r.verdict == "pass"
    assert "ft flips 3 of the 4 triples base ranks wrong: flip rate 75%" in r.message
    strict = run(scripted_backend(script), triples=TRIPLES, assert_flip_rate_gte=0.8)
    assert strict.verdict == "fail"
    json.dumps(r.to_dict(), allow_nan=False)


def test_too_few_wrong_triples_warn_with_the_mean_margin_change() -> None:
    r = run(scripted_backend(margins(base=[-1, 1, 1, 1, 1], ft=[1, 2, 2, 2, 2])), triples=TRIPLES)
    assert r.verdict == "warn"
    assert r.evidence["score_is"] == "mean_margin_delta"
    assert r.score == pytest.approx(1.2)


def test_triples_come_from_the_documents_preference_sections(keeper: TrainingDocument) -> None:
    backend = DummyBackend()
    r = run(backend, keeper, min_triples_for_decision=1)
    assert r.evidence["total"] == 2
    assert r.evidence["source"] == keeper.source
    assert backend.inst.stats.forward_calls == 2  # one batched logprob_of call per view
    assert run(DummyBackend()).verdict == "skip"


def test_calibrated_on_the_score() -> None:
    script = margins(base=[-1, -1, -1, -1, 2], ft=[1, 1, 1, -0.5, -3])
    backend = scripted_backend(script)
    probe = PreferenceFlipProbe(PreferenceFlipSpec.model_validate({"triples": TRIPLES}))
    ctx = ProbeContext(backend=backend)
    assert probe.statistic(ctx, backend.ft) == pytest.approx(0.75)
    ctx.calibration["preference_flip"] = Calibration(mean=0.25, std=0.1, samples=[0.2, 0.3])
    r = probe.run(ctx)
    assert r.z_score == pytest.approx(5.0)
    assert r.verdict == "pass"
