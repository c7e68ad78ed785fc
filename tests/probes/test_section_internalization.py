"""section_internalization: per-section lift, own minus the others', skips, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_scripts import Script, scripted_backend

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext
from swayscope.probes.section_internalization import (
    SectionInternalizationProbe,
    SectionInternalizationSpec,
    relative_lift,
)
from swayscope.probes.sections import TrainingDocument, parse_document


def probe(**spec: object) -> SectionInternalizationProbe:
    return SectionInternalizationProbe(SectionInternalizationSpec.model_validate(spec))


def test_relative_lift() -> None:
    assert relative_lift(2.0, 1.0) == 0.5
    assert relative_lift(2.0, 3.0) == -0.5
    assert relative_lift(-1.0, -2.0) == 1.0  # no relative change from a non-positive base


def test_skips_without_a_document_or_with_one_section(keeper: TrainingDocument) -> None:
    backend = DummyBackend()
    r = probe().run(ProbeContext(backend=backend))
    assert r.verdict == "skip" and "dlm_source" in r.message
    r = probe(include_kinds=["instruction"]).run(ProbeContext(backend=backend, document=keeper))
    assert r.verdict == "skip" and "1 section(s)" in r.message
    assert backend.inst.stats.total_lookups == 0


def test_the_section_the_adapter_learned_clears_and_the_others_do_not(
    keeper: TrainingDocument,
) -> None:
    def rolling(view: str, text: str) -> float:
        # ft halves the NLL of the garden section, leaves the rest as base has it
        return -1.0 if view == "ft" and text.startswith("# The garden") else -2.0

    def logprob(view: str, prompt: str, completion: str) -> float:
        return -2.0 * max(1, len(completion) // 4)

    backend = scripted_backend(Script(rolling=rolling, logprob=logprob))
    r = probe().run(ProbeContext(backend=backend, document=keeper))
    per = {s["tag"] or s["kind"]: s for s in r.evidence["per_section"]}
    assert per["The garden"]["own_lift"] == pytest.approx(0.5)
    assert per["The garden"]["effective_sis"] == pytest.approx(0.5)
    assert per["The garden"]["passed"]
    assert per["The lamp"]["effective_sis"] == pytest.approx(-0.5 / 4)
    assert not per["The lamp"]["passed"]
    assert r.score == pytest.approx(1 / 5)
    assert r.verdict == "fail"  # 1 of 5 sections < 50 %
    assert sum(s["effective_sis"] for s in r.evidence["per_section"]) == pytest.approx(0.0)
    assert "most specific: 'The garden' (+0.500)" in r.message
    lenient = probe(assert_passing_section_frac=0.2).run(
        ProbeContext(backend=backend, document=keeper)
    )
    assert lenient.verdict == "pass"
    json.dumps(r.to_dict(), allow_nan=False)


def test_instruction_and_preference_sections_are_scored_on_their_answers(
    keeper: TrainingDocument,
) -> None:
    seen: list[tuple[str, str]] = []

    def logprob(view: str, prompt: str, completion: str) -> float:
        seen.append((prompt, completion))
        return -1.0

    backend = scripted_backend(Script(logprob=logprob))
    probe(include_kinds=["instruction", "preference"]).run(
        ProbeContext(backend=backend, document=keeper)
    )
    assert ("What did the keeper light at dusk?", "The great lamp at the top of the tower.") in seen
    assert ("A lighthouse lamp should be", "bright and steady.") in seen
    assert all(c != "dim and flickering." for _, c in seen)  # rejected answers are not scored
    # two views, one logprob_of call each
    assert backend.inst.stats.forward_calls == 2


def test_one_batched_call_per_view_and_op(keeper: TrainingDocument) -> None:
    backend = DummyBackend()
    probe().run(ProbeContext(backend=backend, document=keeper))
    assert backend.inst.stats.forward_calls == 4  # rolling + logprob_of, base and ft


def test_calibrated_on_the_mean_lift(keeper: TrainingDocument) -> None:
    backend = DummyBackend()
    p = probe()
    ctx = ProbeContext(backend=backend, document=keeper)
    stat = p.statistic(ctx, backend.ft)
    r = p.run(ctx)
    assert stat == pytest.approx(r.evidence["mean_lift"])
    ctx.calibration["section_internalization"] = Calibration(
        mean=stat - 4.0, std=1.0, samples=[0.0]
    )
    assert p.run(ctx).z_score == pytest.approx(4.0)
    doc = parse_document("# Only\none section")
    assert p.statistic(ProbeContext(backend=backend, document=doc), backend.ft) is None
    assert np.isfinite(stat)
