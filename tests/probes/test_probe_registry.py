"""Probe registry: kinds, building from spec dicts, errors, ordering."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from swayscope.errors import SpecError
from swayscope.probes.base import Probe, ProbeSpec
from swayscope.probes.registry import PROBE_KINDS, build_probe, check_order, probe_class

KINDS = [
    "null_adapter", "delta_kl", "adapter_ablation", "prompt_collapse", "perplexity_shift",
    "calibration_drift", "section_internalization", "leakage", "paraphrase_invariance",
    "preference_flip", "style_fingerprint", "adapter_revert", "cluster_kl",
]
CASE = {"prompt": "The capital of France is", "gold": " Paris", "paraphrases": ["Its capital:"]}
#: The kinds with a required field, and the least spec each takes.
REQUIRED: dict[str, dict[str, object]] = {
    "paraphrase_invariance": {"cases": [CASE]},
    "adapter_revert": {"cases": [CASE]},
    "cluster_kl": {"groups": {"a": ["x y"], "b": ["z w"]}},
}


def test_every_kind_is_registered() -> None:
    assert list(PROBE_KINDS) == KINDS
    for kind, cls in PROBE_KINDS.items():
        assert cls.kind == kind
        assert issubclass(cls, Probe)
        assert issubclass(cls.spec_class, ProbeSpec)
        if kind in REQUIRED:
            with pytest.raises(ValidationError):
                cls.spec_class.model_validate({})
        assert cls.spec_class.model_validate(REQUIRED.get(kind, {})).kind == kind
        assert cls.__doc__
        assert "**score**" in (sys.modules[cls.__module__].__doc__ or "")


@pytest.mark.parametrize("kind", KINDS)
def test_build_probe_defaults(kind: str) -> None:
    probe = build_probe({"kind": kind, **REQUIRED.get(kind, {})})
    assert probe.kind == kind
    assert isinstance(probe.spec, PROBE_KINDS[kind].spec_class)
    assert probe.spec.label == kind
    assert build_probe({"kind": kind, "name": "x", **REQUIRED.get(kind, {})}).spec.label == "x"


def test_unknown_kind_names_it_and_lists_valid_ones() -> None:
    with pytest.raises(SpecError) as info:
        build_probe({"kind": "delta_kll"})
    msg = str(info.value)
    assert "'delta_kll'" in msg
    for kind in KINDS:
        assert kind in msg
    assert "did you mean 'delta_kl'" in msg
    with pytest.raises(SpecError, match="needs a 'kind'"):
        build_probe({"prompts": ["a"]})
    with pytest.raises(SpecError, match="mapping"):
        build_probe(["delta_kl"])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="unknown probe kind"):
        probe_class("nope")


def test_bad_fields_raise_validation_error() -> None:
    with pytest.raises(ValidationError, match="prompts is empty"):
        build_probe({"kind": "delta_kl", "prompts": []})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        build_probe({"kind": "delta_kl", "promts": ["a"]})


def test_check_order() -> None:
    first = [build_probe({"kind": k, **REQUIRED.get(k, {})}) for k in KINDS]
    check_order(first)
    check_order(first[1:])
    with pytest.raises(SpecError, match="must be the first probe"):
        check_order([first[1], first[0]])


def test_every_kind_says_what_its_score_is_and_a_kind_that_does_not_is_refused() -> None:
    assert sorted(PROBE_KINDS) == sorted(KINDS)
    for kind, cls in PROBE_KINDS.items():
        assert cls.score_label and isinstance(cls.score_unit, str), kind
    with pytest.raises(TypeError, match="must set score_label, score_unit"):
        type("Unlabelled", (Probe,), {"kind": "unlabelled", "spec_class": object})
