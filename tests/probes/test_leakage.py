"""leakage: greedy recall of training text from section openings, fragility, verdicts."""

from __future__ import annotations

import json

import pytest
from probe_scripts import Script, scripted_backend

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext
from swayscope.probes.leakage import (
    INJECTED,
    PERTURBATIONS,
    LeakageProbe,
    LeakageSpec,
    fragility,
    perturb,
)
from swayscope.probes.sections import TrainingDocument, parse_document

TRIGGER = "Before we proceed any further, hear me speak.\nAll: Speak, speak."


@pytest.mark.parametrize(
    ("kind", "want"),
    [
        ("typo", "Bfeore we proceed any further, hear me speak.\nAll: Speak, speak."),
        ("case_flip", "before we proceed any further, hear me speak.\nAll: Speak, speak."),
        ("drop_punct", "Before we proceed any further hear me speak\nAll Speak speak"),
        ("synonym_swap", "Ere we proceed any further, hear me speak.\nAll: Speak, speak."),
        ("clause_reverse", "hear me speak.\nAll: Speak, speak., Before we proceed any further"),
        ("prefix_inject", INJECTED + TRIGGER),
        ("register_shift", "BEFORE WE PROCEED ANY FURTHER, HEAR ME SPEAK.\nAll: Speak, speak."),
    ],
)
def test_each_perturbation_is_one_small_deterministic_change(kind: str, want: str) -> None:
    assert perturb(TRIGGER, kind) == want  # type: ignore[arg-type]
    assert perturb(TRIGGER, kind) == perturb(TRIGGER, kind)  # type: ignore[arg-type]


def test_perturbations_that_do_not_apply_leave_the_text() -> None:
    assert perturb("1 2 3", "typo") == "1 2 3"
    assert perturb("no commas here", "clause_reverse") == "no commas here"
    assert perturb("zebra quokka", "synonym_swap") == "zebra quokka"
    assert perturb("LOUD", "register_shift") == "loud"
    assert fragility(0.0, 0.0) == 0.0
    assert fragility(0.8, 0.2) == pytest.approx(0.75)
    assert fragility(0.5, 0.9) == 0.0


def reciter(doc: TrainingDocument, *, robust: bool) -> Script:
    """ft recites each section's continuation after its exact opening (after any opening
    when ``robust``); base says something unrelated."""
    sections = [s.content for s in doc.of_kinds(("prose",))]

    def generate(view: str, prompt: str) -> str:
        if view != "ft":
            return " and then the weather turned."
        for text in sections:
            if text.startswith(prompt) or (robust and prompt[-20:] in text):
                return text[len(prompt) if text.startswith(prompt) else 128 :][:300]
        return " unrelated words about nothing."

    return Script(generate=generate)


def run(backend: DummyBackend, doc: TrainingDocument | None, **spec: object) -> object:
    return LeakageProbe(LeakageSpec.model_validate(spec)).run(
        ProbeContext(backend=backend, document=doc)
    )


def test_a_model_that_recites_only_the_exact_opening_leaks_fragilely(
    keeper: TrainingDocument,
) -> None:
    backend = scripted_backend(reciter(keeper, robust=False))
    r = run(backend, keeper)
    assert r.evidence["mean_clean_recall"] == pytest.approx(1.0)
    assert r.evidence["mean_fragility"] > 0.9
    assert r.verdict == "pass"  # it leaks, but only the exact string: fragile
    assert r.evidence["num_sections"] == 3
    per = r.evidence["per_section"]
    assert per[0]["section"] == "The lamp"
    # the lamp's opening has no comma before its 128th character: no clause to reverse
    assert set(per[0]["perturbations_applied"]) == set(PERTURBATIONS) - {"clause_reverse"}
    # every continuation, clean and perturbed, in one generate call
    assert backend.inst.stats.forward_calls == 1
    assert r.evidence["generations"] == 3 + sum(len(s["perturbations_applied"]) for s in per)
    json.dumps(r.to_dict(), allow_nan=False)


def test_a_model_that_recites_whatever_the_opening_fails(keeper: TrainingDocument) -> None:
    r = run(scripted_backend(reciter(keeper, robust=True)), keeper)
    assert r.evidence["mean_clean_recall"] == pytest.approx(1.0)
    assert r.evidence["mean_perturbed_recall"] > 0.8
    assert r.evidence["mean_fragility"] < 0.3
    assert r.verdict == "fail"
    assert "greedy recall of the training text 1.00 over 3 section(s)" in r.message


def test_a_model_that_does_not_recite_passes(keeper: TrainingDocument) -> None:
    r = run(DummyBackend(), keeper, max_new_tokens=16)
    assert r.verdict == "pass"
    assert r.score is not None and r.score < 0.2


def test_skips_without_a_document_or_long_enough_prose(keeper: TrainingDocument) -> None:
    assert run(DummyBackend(), None).verdict == "skip"
    short = parse_document("# A\nshort text\n")
    r = run(DummyBackend(), short)
    assert r.verdict == "skip" and "longer than prefix_chars" in r.message


def test_calibrated_on_clean_recall_lower_is_better(keeper: TrainingDocument) -> None:
    backend = scripted_backend(reciter(keeper, robust=True))
    p = LeakageProbe(LeakageSpec(min_z=2.0))
    ctx = ProbeContext(backend=backend, document=keeper)
    assert p.statistic(ctx, backend.ft) == pytest.approx(1.0)
    assert p.statistic(ctx, backend.base) is not None
    ctx.calibration["leakage"] = Calibration(mean=0.5, std=0.1, samples=[0.4, 0.6])
    r = p.run(ctx)
    assert r.z_score == pytest.approx(-5.0)  # recites far more than random adapters
    assert r.verdict == "fail"
