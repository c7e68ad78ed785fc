"""A sweep's telemetry: a trace per adapter run linked to the sweep's span (its probes'
traces linked to it in turn), an ``adapter`` label bounded by the sweep's adapters, the
adapter on every JSONL line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sweep_testing import SUITE

from swayscope.instrumentation import BackendInstrumentation, TraceWriter
from swayscope.suite.spec import load_suite_text
from swayscope.suite.sweep.adapters import expand, order_adapters
from swayscope.suite.sweep.runner import InProcessRunner, run_sweep

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("prometheus_client")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

#: Three checkpoints are enough to see the links and the labels.
SWEPT = ("step-00000", "step-00004", "step-00008")


@pytest.fixture(scope="module")
def observed(
    checkpoints: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One sweep over three checkpoints, with the OTel, Prometheus and JSONL exporters."""
    trace = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    spans = InMemorySpanExporter()
    prom = PrometheusExporter()
    inst = BackendInstrumentation(
        cache_maxsize=4096,
        exporters=[OtelExporter(span_exporter=spans, batch=False), prom, TraceWriter(trace)],
    )
    loaded = load_suite_text(SUITE.format(base=tiny_model.base_dir))
    adapters, order = order_adapters(expand([str(checkpoints / s) for s in SWEPT], "test"))
    result = run_sweep(
        loaded, adapters, InProcessRunner(loaded, inst, live_progress=False), inst, order=order
    )
    inst.close()
    return {"result": result, "spans": spans.get_finished_spans(), "prom": prom, "trace": trace}


def test_one_trace_per_adapter_run_each_linked_to_the_sweep(observed: dict[str, Any]) -> None:
    spans = observed["spans"]
    (sweep,) = [s for s in spans if s.name == "swayscope.sweep"]
    (outcome,) = [s for s in spans if s.name == "swayscope.sweep.outcome"]
    runs = [s for s in spans if s.name == "swayscope.run"]
    assert [r.attributes["swayscope.adapter"] for r in runs] == list(SWEPT)
    assert sweep.attributes["swayscope.sweep.adapters"] == SWEPT
    # the sweep's root ended as it started; its outcome, a child, says how it went
    assert outcome.parent.span_id == sweep.context.span_id
    assert outcome.attributes["swayscope.sweep.adapters_done"] == 3
    assert outcome.attributes["swayscope.sweep.status"] == "complete"
    sweep_id = sweep.attributes["swayscope.sweep_id"]
    assert observed["result"].telemetry["sweep_trace_id"] == format(sweep.context.trace_id, "032x")
    traces = {r.context.trace_id for r in runs}
    assert len(traces) == 3 and sweep.context.trace_id not in traces
    for run in runs:
        assert run.parent is None
        assert run.attributes["swayscope.sweep_id"] == sweep_id
        (link,) = run.links
        assert link.context.span_id == sweep.context.span_id
        assert link.context.trace_id == sweep.context.trace_id
        assert link.attributes == {"swayscope.link": "sweep"}
    # Each probe is a trace of its own too, linked to its adapter's run (bounded traces).
    runs_by_span = {r.context.span_id: r for r in runs}
    probes = [s for s in spans if s.name == "swayscope.probe"]
    assert len(probes) == 2 * len(SWEPT)
    for probe in probes:
        (to_run,) = [x for x in probe.links if x.attributes == {"swayscope.link": "run"}]
        run = runs_by_span[to_run.context.span_id]
        assert probe.attributes["swayscope.run_id"] == run.attributes["swayscope.run_id"]


def test_metrics_carry_a_bounded_adapter_label(observed: dict[str, Any]) -> None:
    registry = observed["prom"].registry
    scores = {
        (s.labels["probe"], s.labels["adapter"]): s.value
        for metric in registry.collect() if metric.name == "swayscope_probe_score"
        for s in metric.samples
    }
    assert {adapter for _, adapter in scores} == set(SWEPT)
    assert {probe for probe, _ in scores} == {"delta_kl", "perplexity_shift"}
    result = observed["result"]
    for point in result.points("delta_kl"):
        assert scores[("delta_kl", point.label)] == pytest.approx(point.score)
    assert registry.get_sample_value("swayscope_sweep_progress_ratio") == 1.0


def test_jsonl_lines_carry_their_adapter(observed: dict[str, Any]) -> None:
    lines = [json.loads(line) for line in observed["trace"].read_text().splitlines()]
    assert {x["adapter"] for x in lines} == set(SWEPT)
    by_run: dict[str, set[str]] = {}
    for x in lines:
        by_run.setdefault(x["run_id"], set()).add(x["adapter"])
    assert len(by_run) == 3 and all(len(a) == 1 for a in by_run.values())


def test_the_adapter_label_takes_only_the_announced_values() -> None:
    from swayscope.instrumentation import ProbeEnded, RunEnded, RunStarted, SweepStarted

    prom = PrometheusExporter()

    def run(adapter: str, score: float) -> None:
        prom.export(RunStarted(run_id=adapter, start_ns=0, adapter=adapter, probes=("p",)))
        prom.export(ProbeEnded(run_id=adapter, probe="p", kind="p", end_ns=0, duration_s=0.1,
                               status="pass", score=score))
        prom.export(RunEnded(run_id=adapter, end_ns=0, duration_s=0.1))

    def labels() -> set[str]:
        return {
            s.labels["adapter"]
            for m in prom.registry.collect() if m.name == "swayscope_probe_score"
            for s in m.samples
        }

    run("alone", 1.0)
    run("next", 2.0)
    assert labels() == {"next"}  # outside a sweep: the current run's adapter only
    prom.export(SweepStarted(sweep_id="s", start_ns=0, adapters=("a", "b")))
    for adapter in ("a", "b", "stranger"):
        run(adapter, 3.0)
    assert labels() == {"a", "b", "other"}
    assert prom.registry.get_sample_value("swayscope_sweep_progress_ratio") == 1.0
    prom.shutdown()
