"""Runner on the dummy backend: order, errors become results, stats, interruption."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from sway_testing import Recorder

from swayscope.instrumentation import BackendInstrumentation, ProbeEnded
from swayscope.probes.base import ProbeContext, ProbeResult
from swayscope.suite.result import SuiteResult
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import load_suite_text

SPEC = """\
version: 1
name: t
models:
  kind: dummy
suite:
  - kind: null_adapter
  - kind: delta_kl
  - kind: adapter_ablation
  - kind: prompt_collapse
  - kind: perplexity_shift
"""


def _run(text: str = SPEC, **kw: Any) -> tuple[SuiteResult, Recorder, BackendInstrumentation]:
    loaded = load_suite_text(text, "t.yaml")
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec], **kw)
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
    return run_suite(loaded, backend, live_progress=False), rec, inst


def test_all_probes_run_in_order_and_pass_on_a_real_adapter() -> None:
    result, rec, inst = _run()
    assert [p.name for p in result.probes] == [
        "null_adapter", "delta_kl", "adapter_ablation", "prompt_collapse", "perplexity_shift",
    ]
    assert all(p.verdict == "pass" for p in result.probes), [p.to_dict() for p in result.probes]
    assert result.exit_code == 0 and result.status == "complete"
    assert result.backend_stats["forward_calls"] == inst.stats.forward_calls > 0
    assert result.backend_stats["cache_hits"] > 0
    ended = [e for e in rec.events if isinstance(e, ProbeEnded)]
    assert [(e.done, e.total) for e in ended] == [(i, 5) for i in range(1, 6)]
    assert all(p.duration_s > 0 for p in result.probes)


def test_no_adapter_effect_fails_with_exit_code_1() -> None:
    text = SPEC.replace("kind: dummy", "kind: dummy\n  adapter_strength: 0.0")
    result, _, _ = _run(text)
    assert result.exit_code == 1
    assert {p.name: p.verdict for p in result.probes}["delta_kl"] == "fail"


def test_a_probe_that_raises_becomes_an_error_result_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from swayscope.probes.delta_kl import DeltaKLProbe

    def boom(self: Any, ctx: ProbeContext) -> ProbeResult:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(DeltaKLProbe, "run", boom)
    result, rec, _ = _run()
    verdicts = {p.name: p.verdict for p in result.probes}
    assert verdicts["delta_kl"] == "error"
    assert "probe exploded" in (result.probes[1].error or "")
    assert verdicts["perplexity_shift"] == "pass"
    assert result.exit_code == 1
    ended = {e.probe: e.status for e in rec.events if isinstance(e, ProbeEnded)}
    assert ended["delta_kl"] == "error"


def test_interrupt_keeps_partial_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from swayscope.probes.adapter_ablation import AdapterAblationProbe

    def interrupt(self: Any, ctx: ProbeContext) -> ProbeResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(AdapterAblationProbe, "run", interrupt)
    result, _, _ = _run()
    assert result.status == "interrupted"
    assert [p.name for p in result.probes] == ["null_adapter", "delta_kl"]
    assert result.not_run == ["adapter_ablation", "prompt_collapse", "perplexity_shift"]
    assert result.exit_code == 2


def test_result_json_is_written_atomically_and_complete(tmp_path: Path) -> None:
    result, _, _ = _run()
    out = tmp_path / "r.json"
    result.write_json(out)
    data = json.loads(out.read_text())
    assert data["schema"] == 1 and data["status"] == "complete"
    assert len(data["probes"]) == 5
    assert data["backend_stats"]["hit_rate"] == pytest.approx(result.backend_stats["hit_rate"])
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_cross_probe_sharing_shows_in_hits() -> None:
    result, _, _ = _run()
    # adapter_ablation's λ=0 and λ=1 reuse delta_kl's base/ft distributions.
    assert result.backend_stats["hit_rate"] > 0.2



def test_two_runs_on_one_instrumentation_log_each_progress_line_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The runner's progress monitor leaves with its run; a second run logs no stale copy."""
    loaded = load_suite_text(SPEC, "t.yaml")
    inst = BackendInstrumentation()
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
    with caplog.at_level(logging.INFO, logger="swayscope"):
        for _ in range(2):
            run_suite(loaded, backend, live_progress=False)
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probe 1/5 ")]
    assert len([m for m in done if "started" in m]) == 2
    assert len([m for m in done if " in " in m and "started" not in m]) == 2
    assert inst.exporters == []


def test_a_second_run_in_one_process_has_its_own_run_id_and_stats() -> None:
    loaded = load_suite_text(SPEC, "t.yaml")
    inst = BackendInstrumentation(cache_maxsize=4096)
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
    first = run_suite(loaded, backend, live_progress=False)
    second = run_suite(loaded, backend, live_progress=False)
    assert first.run_id != second.run_id and second.run_id == inst.run_id
    s1, s2 = first.backend_stats, second.backend_stats
    # The cumulative BackendStats are both runs; each result is its own run.
    for key in ("cache_hits", "cache_misses", "forward_calls", "n_tokens"):
        assert s1[key] + s2[key] == getattr(inst.stats, key), key
    # The second run finds every prompt cached: no model call, a hit rate of 1.
    assert s2["forward_calls"] == 0 and s2["cache_misses"] == 0 and s2["hit_rate"] == 1.0
    assert s2["max_batch_size"] == 0 < s1["max_batch_size"]
    assert s1["hit_rate"] < 1.0


def test_runs_side_by_side_count_only_their_own_lookups() -> None:
    """Two runs live at once in one instrumentation (a sweep's adapters on a pool): each
    result has its own run id, counters and per-probe counts; the cache is shared."""
    loaded = load_suite_text(SPEC, "t.yaml")
    inst = BackendInstrumentation(cache_maxsize=4096)
    results: dict[str, SuiteResult] = {}
    barrier = threading.Barrier(2)

    def run(run_id: str) -> None:
        backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
        barrier.wait()
        results[run_id] = run_suite(loaded, backend, live_progress=False, run_id=run_id)

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run, name))
        for name in ("one", "two")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert {r.run_id for r in results.values()} == {"one", "two"}
    for result in results.values():
        by_probe = result.cache_by_probe
        stats = result.backend_stats
        assert sum(p["lookups"] for p in by_probe.values()) == (
            stats["cache_hits"] + stats["cache_misses"]
        )
        assert sum(p["forward_calls"] for p in by_probe.values()) == stats["forward_calls"]
    for key in ("cache_hits", "cache_misses", "forward_calls"):
        assert sum(r.backend_stats[key] for r in results.values()) == getattr(inst.stats, key)
    assert inst.exporters == []


def test_the_result_has_each_probes_cache_counts() -> None:
    result, _, inst = _run()
    by_probe = result.to_dict()["cache_by_probe"]
    assert set(by_probe) == {p.name for p in result.probes}
    assert sum(p["cache_hits"] for p in by_probe.values()) == inst.stats.cache_hits
    assert sum(p["cache_misses"] for p in by_probe.values()) == inst.stats.cache_misses
    assert sum(p["forward_calls"] for p in by_probe.values()) == inst.stats.forward_calls
    for row in by_probe.values():
        assert row["lookups"] == row["cache_hits"] + row["cache_misses"]
        assert row["hit_rate"] == pytest.approx(row["cache_hits"] / row["lookups"])
    # adapter_ablation reuses delta_kl's distributions: its ratio is above the suite's.
    assert by_probe["adapter_ablation"]["hit_rate"] > result.backend_stats["hit_rate"]


def test_losses_at_the_final_flush_are_in_the_result() -> None:
    """The result's telemetry block is taken after ``finish_telemetry`` (the final span
    flush and push), and counts this run's losses only."""
    loaded = load_suite_text(SPEC, "t.yaml")
    inst = BackendInstrumentation()
    inst.health.record_spans_dropped(5)  # an earlier run's losses
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)

    def final_flush() -> None:
        inst.health.record_spans_dropped(7)
        inst.health.record_error("pushgateway", OSError("connection refused"))

    result = run_suite(loaded, backend, live_progress=False, finish_telemetry=final_flush)
    assert result.telemetry["spans_dropped"] == 7
    assert result.telemetry["exporter_errors"] == {"pushgateway": 1}


def test_preload_imports_the_stack_unscanned_and_leaves_the_collector_on() -> None:
    import gc
    import sys

    from swayscope.suite.runner import preload_backend
    from swayscope.suite.spec import ModelsSpec

    frozen = gc.get_freeze_count()
    preload_backend(ModelsSpec(kind="dummy"))
    assert gc.get_freeze_count() == frozen, "nothing to import for the dummy backend"
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    try:
        preload_backend(ModelsSpec(kind="hf"))
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        assert {"peft", "transformers.modeling_utils"} <= set(sys.modules)
    finally:
        gc.unfreeze()  # this process runs more than one model load: give the objects back
