"""delta_kl: verdicts on the dummy backend, CI, batching, z-score, spec validation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sway_testing import run_probes

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext
from swayscope.probes.defaults import DEFAULT_PROMPTS
from swayscope.probes.delta_kl import DeltaKLProbe, DeltaKLSpec
from swayscope.probes.null_adapter import NullAdapterProbe, NullAdapterSpec


def test_real_adapter_passes() -> None:
    backend = DummyBackend(adapter_strength=1.0)
    (r,) = run_probes(backend, [DeltaKLProbe(DeltaKLSpec())]).results
    assert r.verdict == "pass"
    assert r.kind == "delta_kl" and r.name == "delta_kl"
    assert r.score is not None and r.score > 0.05
    ev = r.evidence
    assert ev["ci_low"] <= r.score <= ev["ci_high"]
    assert ev["n_prompts"] == len(DEFAULT_PROMPTS) == len(ev["per_prompt"])
    assert ev["divergence"] == "js"
    assert ev["calibrated"] is False and r.z_score is None
    json.dumps(r.to_dict(), allow_nan=False)


def test_no_adapter_fails() -> None:
    backend = DummyBackend(adapter_strength=0.0)
    (r,) = run_probes(backend, [DeltaKLProbe(DeltaKLSpec())]).results
    assert r.verdict == "fail"
    assert r.score == 0.0
    # threshold 0 still fails an adapter that changes nothing
    (r0,) = run_probes(backend, [DeltaKLProbe(DeltaKLSpec(threshold=0.0))]).results
    assert r0.verdict == "fail"


def test_threshold_decides() -> None:
    backend = DummyBackend()
    (r,) = run_probes(backend, [DeltaKLProbe(DeltaKLSpec(threshold=0.5))]).results
    assert r.verdict == "fail"
    assert "< threshold" in r.message


def test_kl_option() -> None:
    backend = DummyBackend()
    js, kl = run_probes(
        backend,
        [DeltaKLProbe(DeltaKLSpec()), DeltaKLProbe(DeltaKLSpec(name="kl", divergence="kl"))],
    ).results
    assert kl.verdict == "pass"
    assert kl.evidence["divergence"] == "kl"
    assert kl.evidence["threshold"] == 0.02
    assert kl.score is not None and js.score is not None and kl.score > js.score


def test_deterministic_for_a_seed() -> None:
    a = run_probes(DummyBackend(), [DeltaKLProbe(DeltaKLSpec())], seed=3).results[0]
    b = run_probes(DummyBackend(), [DeltaKLProbe(DeltaKLSpec())], seed=3).results[0]
    c = run_probes(DummyBackend(), [DeltaKLProbe(DeltaKLSpec())], seed=4).results[0]
    assert a.to_dict() == b.to_dict()
    assert a.score == c.score
    assert (a.evidence["ci_low"], a.evidence["ci_high"]) != (
        c.evidence["ci_low"],
        c.evidence["ci_high"],
    )


def test_one_batched_forward_call_per_view() -> None:
    backend = DummyBackend()
    run_probes(backend, [DeltaKLProbe(DeltaKLSpec())])
    s = backend.inst.stats
    assert s.forward_calls == 2
    assert s.batches_sent == 2
    assert s.max_batch_size == len(DEFAULT_PROMPTS)
    run_probes(backend, [DeltaKLProbe(DeltaKLSpec(name="again"))])
    assert s.forward_calls == 2  # second run: all cache hits
    assert s.cache_hits == 2 * len(DEFAULT_PROMPTS)


def test_calibrated_z_score_is_large() -> None:
    backend = DummyBackend()
    null, dkl = run_probes(
        backend, [NullAdapterProbe(NullAdapterSpec()), DeltaKLProbe(DeltaKLSpec())]
    ).results
    assert null.verdict == "pass"
    assert dkl.verdict == "pass"
    assert dkl.z_score is not None and dkl.z_score > 10
    assert dkl.evidence["calibrated"] is True
    assert len(dkl.evidence["null_samples"]) == 3
    assert "z = " in dkl.message


def test_low_z_fails_even_above_threshold() -> None:
    backend = DummyBackend()
    probe = DeltaKLProbe(DeltaKLSpec())
    ctx = ProbeContext(backend=backend)
    ctx.calibration["delta_kl"] = Calibration(mean=0.08, std=0.01, samples=[0.07, 0.08, 0.09])
    r = probe.run(ctx)
    assert r.score is not None and r.score > r.evidence["threshold"]
    assert r.z_score is not None and r.z_score < 3
    assert r.verdict == "fail"


def test_zero_null_spread_falls_back_to_threshold() -> None:
    backend = DummyBackend()
    ctx = ProbeContext(backend=backend)
    ctx.calibration["delta_kl"] = Calibration(mean=0.0, std=0.0, samples=[0.0, 0.0])
    r = DeltaKLProbe(DeltaKLSpec()).run(ctx)
    assert r.verdict == "pass" and r.z_score is None
    assert "z-score undefined" in r.message


def test_statistic_matches_score() -> None:
    backend = DummyBackend()
    probe = DeltaKLProbe(DeltaKLSpec())
    ctx = ProbeContext(backend=backend)
    assert probe.statistic(ctx, backend.ft) == probe.run(ctx).score


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"prompts": []}, "prompts is empty"),
        ({"prompts": ["ok", "  "]}, "prompts[1] is blank"),
        ({"divergence": "tv"}, "divergence"),
        ({"threshold": -1}, "threshold"),
        ({"n_boot": -5}, "n_boot"),
        ({"colour": "red"}, "colour"),
        ({"kind": "delta_kls"}, "kind"),
    ],
)
def test_spec_validation(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        DeltaKLSpec.model_validate({"kind": "delta_kl", **fields})
    assert needle in str(info.value)


def test_spec_defaults_and_label() -> None:
    spec = DeltaKLSpec()
    assert spec.prompts == DEFAULT_PROMPTS
    assert spec.label == "delta_kl"
    assert DeltaKLSpec(name="mine").label == "mine"
    assert DeltaKLSpec.model_validate({"kind": "delta_kl", "prompts": ["a", "b"]}).prompts == (
        "a",
        "b",
    )
