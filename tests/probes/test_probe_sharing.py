"""The default suite (the demo's five kinds, every field at its default) on the dummy backend:
verdicts, and forward passes shared across probes."""

from __future__ import annotations

import json

from sway_testing import run_probes

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import ProbeContext, ProbeResult
from swayscope.probes.defaults import DEFAULT_COLLAPSE_PROMPTS, DEFAULT_PROMPTS
from swayscope.probes.registry import build_probe

DEFAULT_SUITE = ("null_adapter", "delta_kl", "adapter_ablation", "prompt_collapse",
                 "perplexity_shift")


def run_default_suite(backend: DummyBackend) -> dict[str, ProbeResult]:
    probes = [build_probe({"kind": k}) for k in DEFAULT_SUITE]
    return {p.kind: r for p, r in zip(probes, run_probes(backend, probes).results, strict=True)}


def test_default_suite_on_a_real_adapter() -> None:
    results = run_default_suite(DummyBackend())
    assert {k: r.verdict for k, r in results.items()} == {
        "null_adapter": "pass",
        "delta_kl": "pass",
        "adapter_ablation": "pass",
        "prompt_collapse": "pass",
        "perplexity_shift": "pass",
    }
    assert results["delta_kl"].z_score is not None and results["delta_kl"].z_score > 10
    assert results["perplexity_shift"].z_score is not None
    json.dumps({k: r.to_dict() for k, r in results.items()}, allow_nan=False)


def test_default_suite_without_an_adapter() -> None:
    results = run_default_suite(DummyBackend(adapter_strength=0.0))
    assert results["delta_kl"].verdict == "fail"
    assert results["adapter_ablation"].verdict == "fail"
    assert results["prompt_collapse"].verdict == "fail"
    assert results["perplexity_shift"].verdict == "warn"


def test_cross_probe_cache_sharing() -> None:
    backend = DummyBackend()
    s = backend.inst.stats
    probes = [build_probe({"kind": k}) for k in DEFAULT_SUITE]
    ctx = ProbeContext(backend=backend)
    seen: dict[str, tuple[int, int, int]] = {}
    for i, probe in enumerate(probes):
        ctx.later_probes = [(p.spec, p) for p in probes[i + 1 :]]
        before = (s.forward_calls, s.cache_hits, s.cache_misses)
        probe.run(ctx)
        seen[probe.kind] = (
            s.forward_calls - before[0],
            s.cache_hits - before[1],
            s.cache_misses - before[2],
        )
    n, c = len(DEFAULT_PROMPTS), len(DEFAULT_COLLAPSE_PROMPTS)
    # null_adapter: base + 3 nulls for delta_kl, base + 3 nulls for perplexity_shift
    assert seen["null_adapter"][0] == 8
    # delta_kl: base from null_adapter's batch (hits), ft computed in one call
    assert seen["delta_kl"] == (1, n, n)
    # ablation: base and λ=1 (ft) hit, λ=0 free; 0.25, 0.5, 0.75, 1.25 computed
    assert seen["adapter_ablation"] == (4, 2 * n, 4 * n)
    # collapse: bare prompts hit in base and ft; the 4 longer contexts: one batch per view
    assert seen["prompt_collapse"] == (2, 2 * c, 2 * 4 * c)
    # perplexity_shift: base from null_adapter (hit), ft computed
    calls, hits, _ = seen["perplexity_shift"]
    assert calls == 1 and hits > 0
    assert s.cache_evictions == 0
    assert s.compute_errors == 0
