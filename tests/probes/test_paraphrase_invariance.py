"""paraphrase_invariance: verbatim and paraphrase lift, generalisation ratio, intents."""

from __future__ import annotations

import json

import pytest
from probe_scripts import Script, scripted_backend
from pydantic import ValidationError

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext, ProbeResult
from swayscope.probes.paraphrase_invariance import (
    ParaphraseInvarianceProbe,
    ParaphraseInvarianceSpec,
)

CASES = [
    {"prompt": "The keeper lights the", "gold": " great lamp",
     "paraphrases": ["Each evening the keeper lights the", "What does the keeper light?"]},
    {"prompt": "The potatoes are kept in", "gold": " a dry cellar",
     "paraphrases": ["Where are the potatoes kept? In"]},
]
VERBATIM = {c["prompt"] for c in CASES}


def lifted(*, paraphrases: float) -> Script:
    """ft finds gold answers 1 nat/token likelier after the exact prompts and
    ``paraphrases`` nats/token likelier after their paraphrases."""

    def logprob(view: str, prompt: str, completion: str) -> float:
        tokens = max(1, len(completion) // 4)
        if view != "ft":
            return -3.0 * tokens
        return (-2.0 if prompt in VERBATIM else -3.0 + paraphrases) * tokens

    return Script(logprob=logprob)


def run(backend: DummyBackend, **spec: object) -> ProbeResult:
    probe = ParaphraseInvarianceProbe(ParaphraseInvarianceSpec.model_validate(
        {"cases": CASES, **spec}
    ))
    return probe.run(ProbeContext(backend=backend))


def test_a_generalising_adapter_passes_and_a_memorising_one_fails() -> None:
    general = run(scripted_backend(lifted(paraphrases=0.8)))
    assert general.score == pytest.approx(1.0)
    assert general.evidence["paraphrase_lift_mean"] == pytest.approx(0.8)
    assert general.evidence["generalization_ratio"] == pytest.approx(0.8)
    assert general.verdict == "pass"
    rote = run(scripted_backend(lifted(paraphrases=0.0)))
    assert rote.evidence["generalization_ratio"] == pytest.approx(0.0)
    assert rote.verdict == "fail"
    assert "wanted ratio ≥ 0.5 (generalize)" in rote.message
    json.dumps(general.to_dict(), allow_nan=False)


def test_intent_memorize_inverts_the_ratio_test() -> None:
    assert run(scripted_backend(lifted(paraphrases=0.0)), intent="memorize").verdict == "pass"
    assert run(scripted_backend(lifted(paraphrases=0.8)), intent="memorize").verdict == "fail"


def test_no_lift_gives_no_ratio_and_fails() -> None:
    r = run(DummyBackend(adapter_strength=0.0))
    assert r.score == 0.0
    assert r.evidence["generalization_ratio"] is None
    assert r.verdict == "fail"


def test_every_pair_in_one_call_per_view() -> None:
    backend = DummyBackend()
    r = run(backend)
    assert backend.inst.stats.forward_calls == 2
    assert backend.inst.stats.max_batch_size == 5
    assert len(r.evidence["per_case"]) == 2


def test_cases_are_required_and_checked() -> None:
    with pytest.raises(ValidationError, match="cases"):
        ParaphraseInvarianceSpec()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="at least 1"):
        ParaphraseInvarianceSpec.model_validate(
            {"cases": [{"prompt": "a", "gold": "b", "paraphrases": []}]}
        )


def test_calibrated_on_the_verbatim_lift() -> None:
    backend = scripted_backend(lifted(paraphrases=0.8))
    probe = ParaphraseInvarianceProbe(ParaphraseInvarianceSpec.model_validate({"cases": CASES}))
    ctx = ProbeContext(backend=backend)
    assert probe.statistic(ctx, backend.ft) == pytest.approx(1.0)
    ctx.calibration["paraphrase_invariance"] = Calibration(mean=0.5, std=0.25, samples=[0.5])
    r = probe.run(ctx)
    assert r.z_score == pytest.approx(2.0)
    assert r.verdict == "fail"  # z 2 < min_z 3: a random adapter lifts nearly as much
