"""adapter_ablation: λ sweep, curve statistics, verdicts, cache reuse of λ=0 and λ=1."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from itertools import pairwise

import numpy as np
import pytest
from pydantic import ValidationError

from swayscope.backends.api import scaled_view_id
from swayscope.backends.dummy import DummyBackend, DummyView
from swayscope.probes.adapter_ablation import (
    AdapterAblationProbe,
    AdapterAblationSpec,
    r_squared,
    saturation_lambda,
)
from swayscope.probes.base import ProbeContext
from swayscope.probes.defaults import DEFAULT_LAMBDAS, DEFAULT_PROMPTS
from swayscope.probes.delta_kl import DeltaKLProbe, DeltaKLSpec


def test_dummy_adapter_passes_with_quadratic_curve() -> None:
    r = AdapterAblationProbe(AdapterAblationSpec()).run(ProbeContext(backend=DummyBackend()))
    assert r.verdict == "pass"
    ev = r.evidence
    divs = ev["divergence_by_lambda"]
    assert ev["lambdas"] == list(DEFAULT_LAMBDAS)
    assert divs[0] == 0.0
    assert all(b > a for a, b in pairwise(divs))
    assert r.score == ev["divergence_at_1"] == divs[DEFAULT_LAMBDAS.index(1.0)]
    assert ev["monotone"] is True
    assert ev["linearity_r2"] > 0.98  # div ≈ c·λ² for logits linear in λ
    assert ev["r2_vs_lambda"] < ev["linearity_r2"]
    assert 0.75 < ev["saturation_lambda"] < 1.0
    assert ev["overshoot"] > 1.2
    json.dumps(r.to_dict(), allow_nan=False)


def test_no_adapter_fails() -> None:
    backend = DummyBackend(adapter_strength=0.0)
    r = AdapterAblationProbe(AdapterAblationSpec()).run(ProbeContext(backend=backend))
    assert r.verdict == "fail"
    assert r.score == 0.0
    assert r.evidence["saturation_lambda"] is None
    assert r.evidence["overshoot"] is None
    assert r.evidence["linearity_r2"] is None


def test_weak_adapter_warns_below_threshold() -> None:
    spec = AdapterAblationSpec(threshold=1.0)
    r = AdapterAblationProbe(spec).run(ProbeContext(backend=DummyBackend()))
    assert r.verdict == "warn"
    assert "threshold" in r.message


class FoldingBackend(DummyBackend):
    """An adapter whose effect at λ=1.25 drops back to almost nothing."""

    def scaled(self, lam: float) -> AbstractContextManager[DummyView]:
        effective = 0.1 if lam == 1.25 else float(lam)
        return self._enter(DummyView(self, scaled_view_id(lam), effective, None, 0.0))


def test_non_monotone_curve_warns() -> None:
    r = AdapterAblationProbe(AdapterAblationSpec()).run(ProbeContext(backend=FoldingBackend()))
    assert r.verdict == "warn"
    assert r.evidence["monotone"] is False
    assert "not monotone" in r.message
    assert r.evidence["overshoot"] < 0.5


def test_lambda_0_and_1_cost_nothing_after_delta_kl() -> None:
    backend = DummyBackend()
    ctx = ProbeContext(backend=backend)
    DeltaKLProbe(DeltaKLSpec()).run(ctx)
    s = backend.inst.stats
    calls, misses, hits = s.forward_calls, s.cache_misses, s.cache_hits
    AdapterAblationProbe(AdapterAblationSpec(lambdas=(0.0, 0.5, 1.0))).run(ctx)
    assert s.forward_calls == calls + 1  # only λ=0.5 is computed
    assert s.cache_misses == misses + len(DEFAULT_PROMPTS)
    assert s.cache_hits == hits + 2 * len(DEFAULT_PROMPTS)  # base and λ=1 (= ft)


def test_curve_helpers() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert r_squared(x, 2 * x + 1) == pytest.approx(1.0)
    assert r_squared(x, np.zeros(4)) is None
    assert r_squared(x, np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(0.2)
    lams = np.array([0.0, 0.5, 1.0])
    assert saturation_lambda(lams, np.array([0.0, 0.4, 1.0]), 0.7) == pytest.approx(0.75)
    assert saturation_lambda(lams, np.array([0.5, 0.6, 1.0]), 0.4) == 0.0
    assert saturation_lambda(lams, np.array([0.0, 0.1, 0.2]), 0.9) is None


def test_lambdas_are_sorted() -> None:
    assert AdapterAblationSpec(lambdas=(1.0, 0.0, 0.5)).lambdas == (0.0, 0.5, 1.0)


@pytest.mark.parametrize(
    ("lambdas", "needle"),
    [
        ([], "at least 3"),
        ([0.0, 1.0], "at least 3"),
        ([0.0, 0.5, 0.75], "include 1"),
        ([0.0, -0.5, 1.0], "≥ 0"),
        ([0.0, float("nan"), 1.0], "finite"),
        ([0.0, 0.5, 0.5, 1.0], "distinct"),
        (["a", 1.0, 0.0], "lambdas"),
    ],
)
def test_bad_lambda_lists(lambdas: list[object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        AdapterAblationSpec.model_validate({"kind": "adapter_ablation", "lambdas": lambdas})
    assert needle in str(info.value)


def test_other_spec_errors() -> None:
    with pytest.raises(ValidationError, match="prompts is empty"):
        AdapterAblationSpec.model_validate({"kind": "adapter_ablation", "prompts": []})
    with pytest.raises(ValidationError, match="lambda"):
        AdapterAblationSpec.model_validate({"kind": "adapter_ablation", "lambda": [1]})
    with pytest.raises(ValidationError, match="saturation_fraction"):
        AdapterAblationSpec(saturation_fraction=0.0)
