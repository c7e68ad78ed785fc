"""adapter_revert: does ft answer paraphrases like base or like the gold answer?"""

from __future__ import annotations

import json

import pytest
from probe_scripts import Script, scripted_backend
from pydantic import ValidationError

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.adapter_revert import AdapterRevertProbe, AdapterRevertSpec
from swayscope.probes.base import ProbeContext, ProbeResult

GOLD = "The keeper lights the great lamp at dusk every evening."
BASE = "I am not sure, it could be anything at all really."
CASES = [
    {"prompt": "What does the keeper do at dusk?", "gold": GOLD,
     "paraphrases": ["At dusk, what is the keeper's task?", "Tell me the keeper's evening job."]},
]


def answers(ft: str, base: str = BASE) -> Script:
    return Script(generate=lambda view, prompt: ft if view == "ft" else base)


def run(backend: DummyBackend, **spec: object) -> ProbeResult:
    probe = AdapterRevertProbe(AdapterRevertSpec.model_validate({"cases": CASES, **spec}))
    return probe.run(ProbeContext(backend=backend))


def test_ft_that_keeps_its_answer_passes_and_one_that_reverts_fails() -> None:
    kept = run(scripted_backend(answers(GOLD)))
    assert kept.score == 0.0 and kept.verdict == "pass"
    assert kept.evidence["kept"] == 2
    reverted = run(scripted_backend(answers(BASE)))
    assert reverted.score == 1.0 and reverted.verdict == "fail"
    assert "revert rate 100%" in reverted.message
    json.dumps(kept.to_dict(), allow_nan=False)


def test_paraphrases_where_base_already_answers_gold_are_left_out() -> None:
    r = run(scripted_backend(answers(GOLD, base=GOLD)))
    assert r.verdict == "warn"
    assert r.evidence["dropped_trivial"] == 2


def test_one_generate_call_per_view_and_no_calibration() -> None:
    backend = DummyBackend()
    probe = AdapterRevertProbe(AdapterRevertSpec.model_validate({"cases": CASES}))
    ctx = ProbeContext(backend=backend)
    probe.run(ctx)
    assert backend.inst.stats.forward_calls == 2
    assert probe.statistic(ctx, backend.ft) is None
    with pytest.raises(ValidationError, match="cases"):
        AdapterRevertSpec.model_validate({"cases": []})
