"""Traces of long runs, seen from a real OTLP receiver (rotel-agent) while the run goes on.

What a user watching a running job in a trace UI relies on: every span that has
arrived belongs to a trace whose root has arrived too; a SIGKILL leaves no
orphans; no trace grows past the documented bound however long the run; errors
show on the run and carry exception events free of prompt text; exemplars name
the forward span they measured.

Locally these skip when rotel-agent is missing; with ``CI`` set they fail instead.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from exporter_servers import (
    ReceivedSpan,
    RotelAgent,
    http_get,
    traces_of_run,
    wait_for,
)
from prometheus_client.openmetrics import parser as om_parser
from sway_testing import cli_env

from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
from swayscope.instrumentation.tracing import DEFAULT_MAX_SPANS_PER_TRACE
from swayscope.probes.base import ProbeContext, ProbeResult
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import load_suite_text

pytestmark = pytest.mark.server

#: How long a span may be seen at the receiver before its trace's root (stated allowance;
#: with root-first delivery the root comes in the same or an earlier request).
ROOT_ALLOWANCE_S = 2.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def rootless(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Spans whose trace's root (a span without a parent) has not arrived."""
    roots = {s.trace_id for s in spans if not s.parent_id}
    return [s for s in spans if s.trace_id not in roots]


def orphans(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Spans whose parent has not arrived."""
    ids = {(s.trace_id, s.span_id) for s in spans}
    return [s for s in spans if s.parent_id and (s.trace_id, s.parent_id) not in ids]


class RootWatch:
    """Polls the receiver; fails when a span stays without its root past the allowance."""

    def __init__(self, agent: RotelAgent) -> None:
        self.agent = agent
        self.first_seen: dict[str, float] = {}
        self.polls = 0

    def poll(self) -> list[ReceivedSpan]:
        spans = self.agent.spans()
        now = time.monotonic()
        self.polls += 1
        for s in rootless(spans) + orphans(spans):
            waited = now - self.first_seen.setdefault(s.span_id, now)
            assert waited <= ROOT_ALLOWANCE_S, (
                f"{s.name} {s.span_id} (trace {s.trace_id}) without its root or parent "
                f"for {waited:.1f} s"
            )
        return spans


def many_probes_spec(tmp_path: Path, probes: int, latency_ms: float) -> Path:
    """delta_kl probes on distinct prompts: each a trace of probe, 2 views, 2 forward calls."""
    lines = [
        "version: 1", "name: long-run", "models:", "  kind: dummy",
        f"  latency_ms: {latency_ms}", "suite:",
    ]
    for i in range(probes):
        prompts = ", ".join(f"'probe {i} prompt {j}'" for j in range(6))
        lines += [
            "  - kind: delta_kl", f"    name: kl_{i}", "    n_boot: 0", f"    prompts: [{prompts}]",
        ]
    spec = tmp_path / "long.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def start_cli(tmp_path: Path, spec: Path, agent: RotelAgent) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "swayscope", "run", str(spec),
            "--otlp-endpoint", agent.http_endpoint, "--json", str(tmp_path / "result.json"),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=cli_env(tmp_path), cwd=tmp_path,
    )


def probe_roots(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == "swayscope.probe" and not s.parent_id]


def assert_whole_probe_traces(spans: list[ReceivedSpan]) -> None:
    """Each delta_kl trace that arrived arrived whole: a unit goes out with its root (and
    these are far below one export batch of 512 spans)."""
    by_trace: dict[str, Counter[str]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, Counter())[s.name] += 1
    for root in probe_roots(spans):
        assert by_trace[root.trace_id] == Counter(
            {"swayscope.probe": 1, "swayscope.view": 2, "swayscope.forward": 2}
        ), root.attributes


def test_roots_are_at_the_receiver_before_or_with_their_spans_during_a_run(
    rotel_agent: RotelAgent, tmp_path: Path
) -> None:
    """The CLI on the dummy backend with latency: polled every 0.2 s while it runs. The
    run's root arrives within seconds of the start, and every probe trace that arrives links
    to it."""
    proc = start_cli(tmp_path, many_probes_spec(tmp_path, 30, 10), rotel_agent)
    watch = RootWatch(rotel_agent)
    seen_running = 0
    root_after: float | None = None
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            spans = watch.poll()
            if proc.poll() is None:  # these arrived while the run was going on
                seen_running = max(seen_running, len(probe_roots(spans)))
                roots = [s for s in spans if s.name == "swayscope.run"]
                if roots and root_after is None:
                    root_after = time.time()
                for probe in probe_roots(spans):  # linked to a span already delivered
                    assert [link.span_id for link in probe.links] == [roots[0].span_id]
            time.sleep(0.2)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert seen_running >= 5, f"only {seen_running} probe traces arrived while the run went on"
    started_at = json.loads((tmp_path / "result.json").read_text())["started_at"]
    assert root_after is not None and root_after - started_at < 5.0, root_after - started_at

    def everything() -> list[ReceivedSpan] | None:
        spans = watch.poll()
        return spans if len(probe_roots(spans)) == 30 and any(
            s.name == "swayscope.run.outcome" for s in spans
        ) else None

    spans = wait_for(everything, 10.0, 0.2)
    assert spans, rotel_agent.process.output()[-2000:]
    assert orphans(spans) == [] and rootless(spans) == []
    assert_whole_probe_traces(spans)
    (run,) = (s for s in spans if s.name == "swayscope.run")
    assert all(
        [link.span_id for link in p.links] == [run.span_id] for p in probe_roots(spans)
    )
    (outcome,) = (s for s in spans if s.name == "swayscope.run.outcome")
    assert outcome.parent_id == run.span_id and outcome.trace_id == run.trace_id
    assert outcome.status == "STATUS_CODE_UNSET"
    assert outcome.attributes["swayscope.run.probes_errored"] == "0"


@pytest.mark.parametrize("extra_s", [0.0, 0.45])
def test_sigkill_mid_run_leaves_no_orphan(
    rotel_agent: RotelAgent, tmp_path: Path, extra_s: float
) -> None:
    proc = start_cli(tmp_path, many_probes_spec(tmp_path, 40, 10), rotel_agent)
    try:
        started = wait_for(
            lambda: [s.name for s in rotel_agent.spans()].count("swayscope.probe") >= 3, 30.0, 0.05
        )
        time.sleep(extra_s)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.kill()  # SIGKILL: no flush, no atexit
        proc.wait(10)
    assert started, rotel_agent.process.output()[-2000:]
    time.sleep(1.0)  # whatever was sent has been received and logged
    spans = rotel_agent.spans()
    assert spans
    assert orphans(spans) == [] and rootless(spans) == []
    assert_whole_probe_traces(spans)
    # the run's trace exists, with what was known at the start; it never ended
    (run,) = (s for s in spans if s.name == "swayscope.run")
    assert run.attributes["swayscope.suite"] and run.attributes["swayscope.run.total_probes"]
    assert "swayscope.run.probes" in run.attributes
    assert not any(s.name == "swayscope.run.outcome" for s in spans)
    assert all([link.span_id for link in p.links] == [run.span_id] for p in probe_roots(spans))
    assert len(probe_roots(spans)) < 40


HUGE_PROBE = """
import sys, time
from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter

otel = OtelExporter(endpoint=sys.argv[1], chunk_seconds=0.5, schedule_delay_s=0.2)
inst = BackendInstrumentation(exporters=[otel], run_id="huge-run")
backend = DummyBackend(inst=inst, latency_s=0.002)
with inst.run(suite="huge", total_probes=1), inst.probe("huge", "delta_kl"):
    with backend.ft() as view:
        for i in range(1_000_000):
            view.next_token_dist(f"prompt {i}", top_k=4)
"""


def test_sigkill_inside_a_chunked_probe_leaves_no_orphan(
    rotel_agent: RotelAgent, tmp_path: Path
) -> None:
    """One endless probe, cut into 0.5 s chunks: its finished chunks arrive while it runs,
    each whole and linked to the one before; the chunk open at the kill is lost whole."""
    script = tmp_path / "huge.py"
    script.write_text(HUGE_PROBE)
    proc = subprocess.Popen(
        [sys.executable, str(script), rotel_agent.http_endpoint],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env=cli_env(tmp_path), cwd=tmp_path,
    )
    watch = RootWatch(rotel_agent)
    try:
        chunks = wait_for(lambda: len(probe_roots(watch.poll())) >= 3, 30.0, 0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait(10)
    assert chunks, rotel_agent.process.output()[-2000:]
    time.sleep(1.0)
    spans = watch.poll()
    assert orphans(spans) == [] and rootless(spans) == []
    roots = sorted(probe_roots(spans), key=lambda s: int(s.attributes["swayscope.chunk.index"]))
    indices = [int(r.attributes["swayscope.chunk.index"]) for r in roots]
    assert indices == list(range(len(roots)))
    for previous, root in itertools.pairwise(roots):
        assert [link.attributes["swayscope.link"] for link in root.links] == [
            "run", "previous_chunk"
        ]
        assert root.links[1].span_id == previous.span_id
        assert root.links[1].trace_id == previous.trace_id
    for root in roots:
        assert root.attributes["swayscope.run_id"] == "huge-run"
        names = Counter(s.name for s in spans if s.trace_id == root.trace_id)
        assert names["swayscope.view"] == 1 and names["swayscope.forward"] >= 1


def test_no_trace_outgrows_the_bound_on_a_long_run(rotel_agent: RotelAgent) -> None:
    """30 small probes and one with 2,600 model calls: every trace ≤ the documented bound."""
    otel = OtelExporter(endpoint=rotel_agent.http_endpoint, schedule_delay_s=0.2)
    inst = BackendInstrumentation(exporters=[otel], cache_maxsize=8192)
    backend = DummyBackend(inst=inst)
    t0 = time.monotonic()
    with inst.run(suite="bound", total_probes=31):
        for p in range(30):
            with inst.probe(f"small_{p}", "delta_kl") as handle, backend.ft() as view:
                view.next_token_dist_batch([f"s{p} {i}" for i in range(4)], top_k=4)
                handle.status = "pass"
        with inst.probe("huge", "delta_kl") as handle:
            with backend.base() as view:
                for i in range(2600):
                    view.next_token_dist(f"huge {i}", top_k=4)
                    view.next_token_dist(f"huge {i}", top_k=4)  # a hit
            handle.status = "pass"
    inst.close()
    assert time.monotonic() - t0 < 20
    assert otel.spans_dropped == 0
    made = otel.spans_delivered

    def arrived() -> dict[str, list[ReceivedSpan]] | None:
        traces = traces_of_run(rotel_agent.spans(), inst.run_id)
        return traces if sum(map(len, traces.values())) == made else None

    traces = wait_for(arrived, 20.0, 0.25)
    assert traces, f"{made} spans delivered; rotel has fewer"
    assert max(len(t) for t in traces.values()) <= DEFAULT_MAX_SPANS_PER_TRACE
    spans = [s for t in traces.values() for s in t]
    assert orphans(spans) == [] and rootless(spans) == []
    huge = sorted(
        (s for s in probe_roots(spans) if s.attributes["swayscope.probe"] == "huge"),
        key=lambda s: int(s.attributes["swayscope.chunk.index"]),
    )
    assert len(huge) == 3  # 2,600 calls + 2 open spans per chunk, 1,000 spans a chunk
    assert sum(len(traces[h.trace_id]) for h in huge) == 2600 + 2 * len(huge)
    last = huge[-1]
    assert last.attributes["swayscope.probe.status"] == "pass"
    assert last.attributes["swayscope.forward.calls"] == "2600"  # counted from its start
    assert last.attributes["swayscope.cache.hits"] == "2600"
    (outcome,) = (s for s in spans if s.name == "swayscope.run.outcome")
    assert outcome.attributes["swayscope.forward.calls"] == str(inst.stats.forward_calls)


def test_a_probe_shows_in_chunks_while_it_runs(rotel_agent: RotelAgent) -> None:
    """A slow probe cut every 0.5 s: its finished chunks can be opened before it ends."""
    otel = OtelExporter(
        endpoint=rotel_agent.http_endpoint, chunk_seconds=0.5, schedule_delay_s=0.1
    )
    inst = BackendInstrumentation(exporters=[otel])
    backend = DummyBackend(inst=inst, latency_s=0.02)
    in_probe = threading.Event()
    stop = threading.Event()

    def run() -> None:
        with inst.run(suite="slow"), inst.probe("slow", "delta_kl"), backend.ft() as view:
            in_probe.set()
            for i in range(1000):
                if stop.is_set():
                    break
                view.next_token_dist(f"slow {i}", top_k=4)
        in_probe.clear()

    thread = threading.Thread(target=run)
    thread.start()
    watch = RootWatch(rotel_agent)
    try:
        assert in_probe.wait(10.0)
        chunks = wait_for(lambda: len(probe_roots(watch.poll())) >= 2, 10.0, 0.1)
        still_running = in_probe.is_set()
    finally:
        stop.set()
        thread.join(30)
        inst.close()
    assert chunks and still_running
    final = wait_for(
        lambda: any(s.name == "swayscope.run.outcome" for s in watch.poll()), 10.0, 0.1
    )
    assert final


CANARY = "canary-7f3a9 the secret prompt"


def test_errors_mark_the_run_and_carry_redacted_exception_events(
    rotel_agent: RotelAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe whose model call fails on a canary prompt (quoted in the error): the run is
    ERROR with counts; probe and forward spans carry exception events; no canary anywhere."""
    from swayscope.probes.delta_kl import DeltaKLProbe

    def fail_on_canary(self: Any, ctx: ProbeContext) -> ProbeResult:
        def compute() -> float:
            raise ValueError(f"model rejected {CANARY!r}")

        with ctx.backend.ft() as view:
            ctx.backend.inst.cached("next_token_dist", view.id, CANARY, 8, compute)
        raise AssertionError("unreachable")

    monkeypatch.setattr(DeltaKLProbe, "run", fail_on_canary)
    loaded = load_suite_text(
        "version: 1\nname: errors\nmodels:\n  kind: dummy\nsuite:\n"
        "  - kind: delta_kl\n  - kind: prompt_collapse\n  - kind: perplexity_shift\n",
        "errors.yaml",
    )
    otel = OtelExporter(endpoint=rotel_agent.http_endpoint)
    inst = BackendInstrumentation(exporters=[otel])
    result = run_suite(
        loaded, build_backend(loaded.spec.models, loaded.spec.defaults, inst),
        live_progress=False,
    )
    inst.close()
    assert [p.verdict for p in result.probes] == ["error", "pass", "pass"]

    def arrived() -> list[ReceivedSpan] | None:
        traces = traces_of_run(rotel_agent.spans(), inst.run_id)
        spans = [s for t in traces.values() for s in t]
        return spans if len(spans) == otel.spans_delivered else None

    spans = wait_for(arrived, 15.0, 0.2)
    assert spans
    (run,) = (s for s in spans if s.name == "swayscope.run.outcome")
    assert run.status == "STATUS_CODE_ERROR"
    assert run.status_message == "1 of 3 probes errored"
    assert run.attributes["swayscope.run.probes_errored"] == "1"
    assert run.attributes["swayscope.run.probes_done"] == "3"
    (probe,) = (s for s in probe_roots(spans) if s.attributes["swayscope.probe"] == "delta_kl")
    (failed,) = (
        s for s in spans if s.name == "swayscope.forward" and s.trace_id == probe.trace_id
    )
    for span in (probe, failed):
        assert span.status == "STATUS_CODE_ERROR"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"].startswith("model rejected '<prompt ")
        assert event.attributes["exception.stacktrace"].startswith("Traceback")
        assert "in compute\n" in event.attributes["exception.stacktrace"]
    assert "in fail_on_canary\n" in probe.events[0].attributes["exception.stacktrace"]
    assert all(s.status != "STATUS_CODE_ERROR" for s in probe_roots(spans) if s is not probe)
    (repeated,) = run.events  # the run's trace holds no probe: it says which probe, and why
    assert repeated.attributes == {**probe.events[0].attributes, "swayscope.probe": "delta_kl"}
    assert CANARY not in rotel_agent.process.output()


def test_exemplars_name_the_forward_span_they_measured(rotel_agent: RotelAgent) -> None:
    prom = PrometheusExporter(port=0)
    otel = OtelExporter(endpoint=rotel_agent.http_endpoint, schedule_delay_s=0.2)
    inst = BackendInstrumentation(exporters=[prom, otel])
    try:
        backend = DummyBackend(inst=inst)
        with inst.run(suite="exemplars"):
            for p in range(3):
                with inst.probe(f"p{p}", "delta_kl"), backend.ft() as view:
                    for i in range(5):
                        # latencies over several buckets: several exemplars
                        backend.latency_s = 0.0005 * (i + 1) ** 2
                        view.next_token_dist(f"{p} {i}", top_k=4)
        _, text = http_get(prom.url, accept=OPENMETRICS)
    finally:
        inst.close()
    exemplars = [
        smp.exemplar
        for fam in om_parser.text_string_to_metric_families(text)
        if fam.name == "swayscope_forward_duration_seconds"
        for smp in fam.samples
        if smp.exemplar
    ]
    assert len(exemplars) >= 3
    forwards: dict[str, ReceivedSpan] = {}

    def arrived() -> bool:
        forwards.update(
            (s.span_id, s) for s in rotel_agent.spans() if s.name == "swayscope.forward"
        )
        return len(forwards) == inst.stats.forward_calls

    assert wait_for(arrived, 15.0, 0.2)
    for exemplar in exemplars:
        assert set(exemplar.labels) == {"trace_id", "span_id"}
        span = forwards[exemplar.labels["span_id"]]
        assert span.trace_id == exemplar.labels["trace_id"]
        assert int(span.attributes["swayscope.batch.size"]) == 1
