"""null_adapter: calibration of later probes under seeded null adapters."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sway_testing import run_probes

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.adapter_ablation import AdapterAblationProbe, AdapterAblationSpec
from swayscope.probes.base import Probe, ProbeContext, ViewFactory
from swayscope.probes.delta_kl import DeltaKLProbe, DeltaKLSpec
from swayscope.probes.null_adapter import NullAdapterProbe, NullAdapterSpec
from swayscope.probes.perplexity_shift import PerplexityShiftProbe, PerplexityShiftSpec


def test_skip_without_later_probes() -> None:
    (r,), ctx = run_probes(DummyBackend(), [NullAdapterProbe(NullAdapterSpec())])
    assert r.verdict == "skip"
    assert r.score == 0.0
    assert ctx.calibration == {}


def test_skip_when_nothing_is_calibratable() -> None:
    probes: list[Probe] = [
        NullAdapterProbe(NullAdapterSpec()),
        AdapterAblationProbe(AdapterAblationSpec()),
    ]
    (r, _), ctx = run_probes(DummyBackend(), probes)
    assert r.verdict == "skip"
    assert r.evidence["not_calibratable"] == ["adapter_ablation"]
    assert ctx.calibration == {}


def test_calibrates_later_probes() -> None:
    backend = DummyBackend()
    probes: list[Probe] = [
        NullAdapterProbe(NullAdapterSpec(n=4)),
        DeltaKLProbe(DeltaKLSpec()),
        AdapterAblationProbe(AdapterAblationSpec()),
        PerplexityShiftProbe(PerplexityShiftSpec(name="ppl")),
    ]
    (r, *_), ctx = run_probes(backend, probes, seed=5)
    assert r.verdict == "pass"
    assert r.score == 2.0
    assert set(ctx.calibration) == {"delta_kl", "ppl"}
    cal = ctx.calibration["delta_kl"]
    assert len(cal.samples) == 4
    assert cal.std > 0 and cal.mean > 0
    assert r.evidence["seeds"] == [5, 6, 7, 8]
    assert r.evidence["not_calibratable"] == ["adapter_ablation"]
    assert r.evidence["calibrated"]["ppl"]["kind"] == "perplexity_shift"
    json.dumps(r.to_dict(), allow_nan=False)


def test_null_adapters_that_change_nothing_warn() -> None:
    """An adapter with lora_B = 0 has null adapters of size zero: every statistic is the
    same under each, so there is no noise floor; that is a warning, not a calibration."""
    probes: list[Probe] = [
        NullAdapterProbe(NullAdapterSpec()),
        DeltaKLProbe(DeltaKLSpec()),
        PerplexityShiftProbe(PerplexityShiftSpec()),
    ]
    (r, kl, ppl), ctx = run_probes(DummyBackend(null_strength=0.0), probes)
    assert r.verdict == "warn"
    assert "change nothing" in r.message and "delta_kl, perplexity_shift" in r.message
    assert {c.std for c in ctx.calibration.values()} == {0.0}
    assert kl.z_score is None and ppl.z_score is None


def test_seed_override_and_determinism() -> None:
    def calibrate(spec: NullAdapterSpec, seed: int) -> list[float]:
        _, ctx = run_probes(
            DummyBackend(), [NullAdapterProbe(spec), DeltaKLProbe(DeltaKLSpec())], seed
        )
        return ctx.calibration["delta_kl"].samples

    assert calibrate(NullAdapterSpec(), 0) == calibrate(NullAdapterSpec(), 0)
    assert calibrate(NullAdapterSpec(seed=10), 0) == calibrate(NullAdapterSpec(), 10)
    assert calibrate(NullAdapterSpec(), 0) != calibrate(NullAdapterSpec(), 1)
    assert calibrate(NullAdapterSpec(init_scale=3.0), 0) != calibrate(NullAdapterSpec(), 0)


def test_null_views_are_cached_and_base_is_shared() -> None:
    backend = DummyBackend()
    probes: list[Probe] = [NullAdapterProbe(NullAdapterSpec()), DeltaKLProbe(DeltaKLSpec())]
    run_probes(backend, probes)
    # null_adapter: base + 3 null batches; delta_kl: base from the cache, ft computed
    assert backend.inst.stats.forward_calls == 5


class Exploding(DeltaKLProbe):
    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        raise RuntimeError("boom")


def test_a_raising_statistic_is_reported_not_fatal() -> None:
    probes: list[Probe] = [
        NullAdapterProbe(NullAdapterSpec()),
        Exploding(DeltaKLSpec(name="bad")),
        DeltaKLProbe(DeltaKLSpec()),
    ]
    (r, *_), ctx = run_probes(DummyBackend(), probes)
    assert r.verdict == "warn"
    assert "bad" in r.evidence["errors"] and "boom" in r.evidence["errors"]["bad"]
    assert r.error is not None and "boom" in r.error
    assert set(ctx.calibration) == {"delta_kl"}
    (r2, _), _ = run_probes(DummyBackend(), probes[:2])
    assert r2.verdict == "error"


def test_must_be_first_flag() -> None:
    assert NullAdapterProbe.must_be_first is True


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"n": 1}, "n"),
        ({"seed": -1}, "seed"),
        ({"init_scale": 0}, "init_scale"),
        ({"rank_scale": float("inf")}, "rank_scale"),
        ({"runs": 3}, "runs"),
    ],
)
def test_spec_validation(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        NullAdapterSpec.model_validate({"kind": "null_adapter", **fields})
    assert needle in str(info.value)
