"""calibration_drift: the packaged items, per-item drift, regressions, verdicts, z-score."""

from __future__ import annotations

import json

import pytest
from probe_scripts import Script, scripted_backend
from pydantic import ValidationError

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext
from swayscope.probes.calibration_drift import (
    CalibrationDriftProbe,
    CalibrationDriftSpec,
    packaged_items,
)


def test_the_packaged_items_are_well_formed() -> None:
    items = packaged_items()
    assert len(items) == 176
    assert len({p for p, _ in items}) == len(items)
    assert all(c.startswith(" ") and c.strip() and p.strip() for p, c in items)
    assert ("The capital of France is", " Paris") in items


def run(backend: DummyBackend, **spec: object) -> object:
    probe = CalibrationDriftProbe(CalibrationDriftSpec.model_validate(spec))
    return probe.run(ProbeContext(backend=backend))


def test_an_adapter_that_changes_nothing_drifts_nothing() -> None:
    backend = DummyBackend(adapter_strength=0.0)
    r = run(backend)
    assert r.verdict == "pass"
    assert r.score == 0.0
    assert r.evidence["mean_delta_nats"] == 0.0
    assert r.evidence["total_items"] == 176
    # one batched logprob_of call per view
    assert backend.inst.stats.forward_calls == 2
    assert backend.inst.stats.max_batch_size == 176
    json.dumps(r.to_dict(), allow_nan=False)


def test_a_model_that_forgets_some_facts_fails() -> None:
    forgotten = {p for p, _ in packaged_items()[:30]}

    def logprob(view: str, prompt: str, completion: str) -> float:
        # base: -1 nat per estimated token; ft: 3 nats per token worse on 30 facts
        tokens = max(1, len(completion) // 4)
        return -tokens * (4.0 if view == "ft" and prompt in forgotten else 1.0)

    r = run(scripted_backend(Script(logprob=logprob)))
    assert r.verdict == "fail"
    assert r.evidence["regressed_count"] == 30
    assert r.score == pytest.approx(30 / 176)
    assert r.evidence["mean_delta_nats"] == pytest.approx(-3.0 * 30 / 176)
    assert [w["index"] for w in r.evidence["worst_items"]] == [0, 1, 2, 3, 4]
    assert "30/176 general-knowledge items regressed" in r.message
    # the same damage under a looser gate passes
    loose = run(
        scripted_backend(Script(logprob=logprob)),
        assert_fraction_regressed_lt=0.2, assert_mean_delta_gte=-0.6,
    )
    assert loose.verdict == "pass"


def test_items_limit_and_own_items() -> None:
    r = run(DummyBackend(), items_limit=20)
    assert r.evidence["total_items"] == 20
    own = run(DummyBackend(), items=[["Two and two make", " four"], ["Snow is", " white"]])
    assert own.evidence["total_items"] == 2
    assert own.evidence["source"] == "spec items"
    with pytest.raises(ValidationError, match="items\\[0\\]"):
        CalibrationDriftSpec.model_validate({"items": [["  ", " x"]]})


def test_calibration_is_on_the_mean_drift_and_min_z_is_optional() -> None:
    backend = DummyBackend()
    probe = CalibrationDriftProbe(CalibrationDriftSpec())
    ctx = ProbeContext(backend=backend)
    stat = probe.statistic(ctx, backend.ft)
    assert stat is not None
    r = probe.run(ctx)
    assert stat == pytest.approx(r.evidence["mean_delta_nats"])
    ctx.calibration["calibration_drift"] = Calibration(mean=stat - 1.0, std=0.5, samples=[0.0])
    calibrated = probe.run(ctx)
    assert calibrated.z_score == pytest.approx(2.0)
    assert calibrated.verdict == r.verdict
    strict = CalibrationDriftProbe(CalibrationDriftSpec(min_z=3.0, assert_fraction_regressed_lt=1.0,
                                                        assert_mean_delta_gte=-100.0))
    assert strict.run(ctx).verdict == "fail"
