"""The eight document and generation kinds end to end on the tiny model: one suite through
``run_suite`` with a null-adapter calibration, every probe a verdict (none an error),
the calibrated ones z-scored, generations cached and batched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sway_testing import Recorder

from swayscope.backends.api import GENERATE_OP
from swayscope.suite.result import SuiteResult
from swayscope.suite.runner import run_suite
from swayscope.suite.spec import load_suite_text

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

DOCUMENT = Path(__file__).parent / "data" / "keeper.md"
SUITE = f"""\
version: 1
name: tiny-new-kinds
models: {{kind: hf}}
defaults: {{seed: 0, top_k: 32}}
dlm_source: {DOCUMENT}
suite:
  - {{kind: null_adapter, n: 2}}
  - {{kind: calibration_drift, items_limit: 40}}
  - {{kind: section_internalization}}
  - {{kind: leakage, max_new_tokens: 24, perturbations: [typo, prefix_inject]}}
  - kind: paraphrase_invariance
    cases:
      - {{prompt: "At dusk the keeper lit the", gold: " great lamp",
          paraphrases: ["When evening came, the keeper lit the"]}}
  - {{kind: preference_flip, min_triples_for_decision: 1}}
  - {{kind: style_fingerprint, max_new_tokens: 24}}
  - kind: adapter_revert
    max_new_tokens: 16
    cases:
      - {{prompt: "What did the keeper light?", gold: "The great lamp at the top of the tower.",
          paraphrases: ["Tell me what the keeper lit at dusk."]}}
  - kind: cluster_kl
    groups:
      sea: ["The keeper climbed the tower", "The lamp swept the water", "Fog rolled in"]
      kitchen: ["Ingredients for bread:", "Step 1: Preheat the oven to", "Add the flour"]
"""
CALIBRATED = {
    "calibration_drift", "section_internalization", "leakage", "paraphrase_invariance",
    "preference_flip", "style_fingerprint", "cluster_kl",
}


@pytest.fixture(scope="module")
def outcome(tiny_model: TinyModelPaths) -> Iterator[tuple[SuiteResult, Recorder]]:
    from swayscope.backends.hf import HFBackend

    loaded = load_suite_text(SUITE, "tiny.yaml")
    rec = Recorder()
    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", exporters=[rec])
    try:
        yield run_suite(loaded, backend, live_progress=False), rec
    finally:
        backend.close()


def test_every_new_kind_gives_a_verdict(outcome: tuple[SuiteResult, Recorder]) -> None:
    result, _ = outcome
    by = {p.kind: p for p in result.probes}
    assert list(by) == [
        "null_adapter", "calibration_drift", "section_internalization", "leakage",
        "paraphrase_invariance", "preference_flip", "style_fingerprint", "adapter_revert",
        "cluster_kl",
    ]
    for kind, probe in by.items():
        assert probe.verdict in ("pass", "fail", "warn"), (kind, probe.message, probe.error)
        assert probe.message
    assert by["section_internalization"].evidence["num_sections"] == 5
    assert by["leakage"].evidence["num_sections"] == 3
    assert by["preference_flip"].evidence["total"] == 2


def test_the_null_adapters_calibrate_every_calibratable_kind(
    outcome: tuple[SuiteResult, Recorder],
) -> None:
    result, _ = outcome
    by = {p.kind: p for p in result.probes}
    assert set(by["null_adapter"].evidence["calibrated"]) == CALIBRATED
    for kind in CALIBRATED:
        assert by[kind].evidence["calibrated"] is True, kind
    assert by["adapter_revert"].evidence["calibrated"] is False


def test_generations_are_batched_and_cached(outcome: tuple[SuiteResult, Recorder]) -> None:
    result, rec = outcome
    calls = [c for c in rec.calls() if c.op == GENERATE_OP]
    # leakage: its ft call and one per null adapter; style: base, ft and one per null
    # adapter; adapter_revert: base and ft
    assert len(calls) >= 8
    assert max(c.batch_size for c in calls) >= 6
    hits = [e for e in rec.lookups() if e.op == GENERATE_OP and e.hit]
    # style_fingerprint's base samples, computed while calibrating, are hits when it runs
    assert hits
    assert result.cache_by_probe["style_fingerprint"]["cache_hits"] > 0
