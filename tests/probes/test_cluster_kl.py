"""cluster_kl: grouped and clustered prompts, specificity of the divergence, verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from swayscope.backends.api import TokenDist
from swayscope.backends.dummy import DummyBackend, DummyView
from swayscope.probes.base import Calibration, ProbeContext, ProbeResult
from swayscope.probes.cluster_kl import (
    ClusterKLProbe,
    ClusterKLSpec,
    kmeans,
    specificity,
    trigram_vectors,
)

SEA = [
    "The lighthouse beam", "The lighthouse keeper", "A lighthouse at night", "The sea lighthouse"
]
CODE = ["def parse(line):", "def main(argv):", "def load(path):", "def save(path):"]


class SeaOnly(DummyView):
    """ft moves the model on the sea prompts only."""

    def _compute_next_token_dist(self, prompt: str, top_k: int) -> TokenDist:
        if self.id == "ft" and prompt not in SEA:
            return DummyView(self._backend, "base", 0.0, None, 0.0)._compute_next_token_dist(
                prompt, top_k
            )
        return super()._compute_next_token_dist(prompt, top_k)


class SeaOnlyBackend(DummyBackend):
    view_class = SeaOnly


def run(backend: DummyBackend, **spec: object) -> ProbeResult:
    return ClusterKLProbe(ClusterKLSpec.model_validate(spec)).run(ProbeContext(backend=backend))


def test_specificity() -> None:
    ratio, between, within = specificity(np.asarray([1.0, 1.0, 0.0, 0.0]), [0, 0, 1, 1])
    assert (ratio, between, within) == (1.0, 0.25, 0.0)
    ratio, _, _ = specificity(np.asarray([1.0, 0.0, 1.0, 0.0]), [0, 0, 1, 1])
    assert ratio == 0.0
    assert specificity(np.zeros(4), [0, 0, 1, 1])[0] is None


def test_kmeans_on_trigrams_groups_prompts_that_share_words() -> None:
    vectors = trigram_vectors(SEA + CODE)
    assert vectors.shape[0] == 8
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    labels = kmeans(vectors, 2, seed=0)
    assert labels == [0, 0, 0, 0, 1, 1, 1, 1]
    assert kmeans(vectors, 2, seed=0) == kmeans(vectors, 2, seed=5)


def test_an_adapter_that_moves_one_group_is_specific() -> None:
    backend = SeaOnlyBackend()
    r = run(backend, groups={"sea": SEA, "code": CODE})
    assert r.score is not None and r.score > 0.9
    assert r.verdict == "pass"
    per = {g["group"]: g for g in r.evidence["per_group"]}
    assert per["code"]["mean_divergence"] == 0.0 < per["sea"]["mean_divergence"]
    assert "most moved: 'sea'" in r.message
    assert backend.inst.stats.forward_calls == 2  # one batched call per view
    json.dumps(r.to_dict(), allow_nan=False)
    clustered = run(SeaOnlyBackend(), prompts=SEA + CODE, num_clusters=2, min_prompts=8)
    assert clustered.score == pytest.approx(r.score)
    assert clustered.evidence["grouping"] == "k-means on character trigrams"


def test_an_adapter_that_moves_everything_alike_is_not() -> None:
    r = run(DummyBackend(), groups={"sea": SEA, "code": CODE})
    assert r.score is not None and r.score < 0.6
    assert r.verdict == "fail"
    none = run(DummyBackend(adapter_strength=0.0), groups={"sea": SEA, "code": CODE})
    assert none.verdict == "warn" and "undefined" in none.message


def test_too_few_prompts_to_cluster_skip_and_bad_specs_are_refused() -> None:
    assert run(DummyBackend(), prompts=SEA + CODE).verdict == "skip"  # min_prompts 20
    r = run(DummyBackend(), prompts=SEA + CODE, min_prompts=8, num_clusters=5)
    assert r.verdict == "skip" and "two per cluster" in r.message
    with pytest.raises(ValidationError, match="needs prompts"):
        ClusterKLSpec()
    with pytest.raises(ValidationError, match="at least 2 groups"):
        ClusterKLSpec.model_validate({"groups": {"a": SEA}})
    with pytest.raises(ValidationError, match="not both"):
        ClusterKLSpec.model_validate({"groups": {"a": SEA, "b": CODE}, "prompts": SEA})


def test_calibrated_on_the_specificity_of_the_same_groups() -> None:
    backend = SeaOnlyBackend()
    probe = ClusterKLProbe(ClusterKLSpec.model_validate({"groups": {"sea": SEA, "code": CODE}}))
    ctx = ProbeContext(backend=backend)
    stat = probe.statistic(ctx, backend.ft)
    assert stat is not None and stat > 0.9
    ctx.calibration["cluster_kl"] = Calibration(mean=0.5, std=0.1, samples=[0.4, 0.6])
    r = probe.run(ctx)
    assert r.z_score == pytest.approx((stat - 0.5) / 0.1)
