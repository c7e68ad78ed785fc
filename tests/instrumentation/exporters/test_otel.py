"""OpenTelemetry exporter: span tree, attributes, ids on events, config, drops, no blocking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sway_testing import cli_exporters, cli_settings

from swayscope.backends.dummy import DummyBackend
from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation import BackendInstrumentation, prompt_hash
from swayscope.instrumentation.exporters.jsonl import TraceWriter
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.settings import resolve_otlp_target

FORWARD_KEYS = {
    "swayscope.op",
    "swayscope.view_id",
    "swayscope.view_kind",
    "swayscope.probe",
    "swayscope.batch.size",
    "swayscope.batch.id",
    "swayscope.cache.hits",
    "swayscope.cache.misses",
    "swayscope.top_k",
    "swayscope.prompt_hashes",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
}


class Boom(ValueError):
    pass


def scenario(inst: BackendInstrumentation) -> None:
    """Single calls, a hit, batches with hits and a repeat, a compute error in a probe."""
    backend = DummyBackend(inst=inst)
    with inst.run(suite="smoke", adapter="lora-x", total_probes=2, version="9.9"):
        with inst.probe("delta_kl", "delta_kl") as p:
            with backend.base() as v:
                v.next_token_dist("alpha", top_k=4)  # miss
                v.next_token_dist("alpha", top_k=4)  # hit
                v.next_token_dist_batch(["alpha", "beta", "gamma", "beta"], top_k=4)
            with backend.ft() as v:
                v.next_token_dist_batch(["alpha", "beta"], top_k=4)  # 2 misses, 1 call
                v.next_token_dist_batch(["alpha", "beta"], top_k=4)  # all hits: no call
            p.status, p.verdict, p.score = "pass", "adapter changed the model", 0.5
        with pytest.raises(Boom), inst.probe("broken", "null_adapter"), inst.view("scaled_0.5"):

            def fail() -> float:
                raise Boom("compute exploded")

            inst.cached("logprob_of", "scaled_0.5", "delta", 0, fail)


def by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def run_scenario(**kwargs: Any) -> tuple[BackendInstrumentation, list[ReadableSpan]]:
    mem = InMemorySpanExporter()
    exporter = OtelExporter(span_exporter=mem, batch=False, **kwargs)
    inst = BackendInstrumentation(exporters=[exporter], model_name="dummy-7b")
    scenario(inst)
    inst.close()
    return inst, list(mem.get_finished_spans())


def sid(span: ReadableSpan | None) -> int | None:
    return span.context.span_id if span is not None and span.context is not None else None


def tid(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def test_span_tree_names_parentage_and_attributes() -> None:
    inst, spans = run_scenario()
    (run,) = by_name(spans, "swayscope.run")
    (outcome,) = by_name(spans, "swayscope.run.outcome")
    probes = by_name(spans, "swayscope.probe")
    views = by_name(spans, "swayscope.view")
    forwards = by_name(spans, "swayscope.forward")
    assert len(spans) == 2 + 2 + 3 + len(forwards)
    assert len(forwards) == inst.stats.forward_calls == 4
    assert {s.kind for s in spans} == {SpanKind.INTERNAL}
    assert run.parent is None

    # The run is a trace of its own: a root that ended as the run started, and the run's
    # outcome, its child, from the start to the end. Each probe is the root of its own
    # trace, linked to the run's root and findable by run id: probe → view → forward.
    assert len({tid(s) for s in spans}) == 1 + len(probes)
    assert [s for s in spans if tid(s) == tid(run)] == [run, outcome]
    assert run.end_time == run.start_time == outcome.start_time
    assert outcome.parent is not None and outcome.parent.span_id == sid(run)
    assert outcome.end_time is not None and outcome.end_time >= max(
        s.end_time or 0 for s in probes
    )
    for p in probes:
        assert p.parent is None
        (link,) = p.links
        assert link.context.span_id == sid(run) and link.context.trace_id == tid(run)
        assert dict(link.attributes or {}) == {"swayscope.link": "run"}
        assert (p.attributes or {})["swayscope.run_id"] == inst.run_id
        assert (p.attributes or {})["swayscope.chunk.index"] == 0
    probe_ids = {sid(p) for p in probes}
    assert all(v.parent is not None and v.parent.span_id in probe_ids for v in views)
    view_by_id = {sid(v): v for v in views}
    for f in forwards:
        assert f.parent is not None and f.parent.span_id in view_by_id
        view = view_by_id[f.parent.span_id]
        assert tid(f) == tid(view) != tid(run)
        assert f.attributes is not None and view.attributes is not None
        assert f.attributes["swayscope.view_id"] == view.attributes["swayscope.view_id"]
        # the real start and end of the model call, inside the view
        assert f.start_time is not None and f.end_time is not None
        assert view.start_time is not None and view.end_time is not None
        assert view.start_time <= f.start_time <= f.end_time <= view.end_time

    # what identifies the run is on its root, delivered first
    ra = dict(run.attributes or {})
    assert ra["swayscope.run_id"] == inst.run_id
    assert ra["swayscope.suite"] == "smoke"
    assert ra["swayscope.base_model"] == "dummy-7b"
    assert ra["swayscope.adapter"] == "lora-x"
    assert ra["swayscope.version"] == "9.9"
    assert ra["swayscope.run.total_probes"] == 2
    # how it went is on the outcome
    oa = dict(outcome.attributes or {})
    assert oa["swayscope.run_id"] == inst.run_id
    assert oa["swayscope.cache.hits"] == inst.stats.cache_hits
    assert oa["swayscope.cache.misses"] == inst.stats.cache_misses
    assert oa["swayscope.forward.calls"] == inst.stats.forward_calls
    # a probe errored: the outcome says so, with the counts
    assert run.status.status_code is StatusCode.UNSET
    assert outcome.status.status_code is StatusCode.ERROR
    assert outcome.status.description == "1 of 2 probes errored"
    assert oa["swayscope.run.probes_errored"] == 1 and oa["swayscope.run.probes_done"] == 2
    assert oa["swayscope.run.status"] == "ok"
    # the run's trace holds no probe: its outcome repeats the errored probe's exception
    (repeated,) = outcome.events
    assert repeated.name == "exception" and repeated.attributes is not None
    assert repeated.attributes["swayscope.probe"] == "broken"
    assert repeated.attributes["exception.type"] == "Boom"

    good, bad = sorted(probes, key=lambda p: p.start_time or 0)
    ga = dict(good.attributes or {})
    assert ga["swayscope.probe"] == "delta_kl" and ga["swayscope.probe.kind"] == "delta_kl"
    assert ga["swayscope.probe.status"] == "pass"
    assert ga["swayscope.probe.verdict"] == "adapter changed the model"
    assert ga["swayscope.probe.score"] == 0.5
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "Boom: compute exploded"
    assert (bad.attributes or {})["swayscope.probe.status"] == "error"
    (raised,) = bad.events
    assert raised.name == "exception" and raised.attributes is not None
    assert raised.attributes["exception.type"] == "Boom"
    assert raised.attributes["exception.message"] == "compute exploded"
    assert "Traceback" in str(raised.attributes["exception.stacktrace"])

    base, ft, scaled = sorted(views, key=lambda v: v.start_time or 0)
    assert (base.attributes or {})["swayscope.view_kind"] == "base"
    assert (scaled.attributes or {})["swayscope.view_id"] == "scaled_0.5"
    assert (scaled.attributes or {})["swayscope.view_kind"] == "scaled"
    assert isinstance((base.attributes or {})["swayscope.view.switch_seconds"], float)
    # hits counted on the enclosing span: base had 1 single hit + alpha and the repeated
    # beta in the batch; ft had the all-hit batch
    assert (base.attributes or {})["swayscope.cache.hits"] == 3
    assert (base.attributes or {})["swayscope.cache.misses"] == 3
    assert (ft.attributes or {})["swayscope.cache.hits"] == 2
    assert (ft.attributes or {})["swayscope.forward.calls"] == 1
    assert (good.attributes or {})["swayscope.cache.hits"] == 5

    single, batch, ft_batch, failed = sorted(forwards, key=lambda f: f.start_time or 0)
    for f in forwards:
        assert f.attributes is not None
        keys = set(f.attributes)
        assert keys >= FORWARD_KEYS - {"gen_ai.usage.input_tokens"}
    sa = dict(single.attributes or {})
    assert sa["swayscope.op"] == "next_token_dist"
    assert "gen_ai.operation.name" not in sa  # our ops are no GenAI operation name
    assert sa["swayscope.batch.size"] == 1
    assert sa["swayscope.cache.misses"] == 1 and sa["swayscope.cache.hits"] == 0
    assert sa["swayscope.prompt_hashes"] == (prompt_hash("alpha"),)
    assert sa["swayscope.top_k"] == 4
    assert sa["swayscope.probe"] == "delta_kl"
    assert sa["gen_ai.request.model"] == "dummy-7b"
    assert sa["gen_ai.usage.input_tokens"] == len(b"alpha")
    assert len(str(sa["swayscope.batch.id"])) == 16
    ba = dict(batch.attributes or {})
    assert ba["swayscope.batch.size"] == 2  # beta, gamma (the repeat of beta is a hit)
    assert ba["swayscope.cache.hits"] == 1  # alpha, looked up in the same call
    assert ba["swayscope.prompt_hashes"] == (prompt_hash("beta"), prompt_hash("gamma"))
    assert ba["gen_ai.usage.input_tokens"] == len(b"beta") + len(b"gamma")
    assert (ft_batch.attributes or {})["swayscope.view_kind"] == "ft"

    # a compute error: status ERROR, the exception recorded
    assert failed.status.status_code is StatusCode.ERROR
    assert "compute exploded" in (failed.status.description or "")
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "Boom"
    assert event.attributes["exception.message"] == "compute exploded"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])
    assert "gen_ai.usage.input_tokens" not in (failed.attributes or {})
    assert (run.resource.attributes or {})["service.name"] == "swayscope"


def shape(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Names, parent names, attribute keys and statuses: what both code paths must agree on."""
    names = {sid(s): s.name for s in spans}
    return sorted(
        (
            s.name,
            names.get(s.parent.span_id) if s.parent else None,
            tuple(sorted(s.attributes or {})),
            s.status.status_code.name,
            tuple(e.name for e in s.events),
            tuple(sorted((link.attributes or {}).items()) for link in s.links),
        )
        for s in spans
    )


def test_host_provider_path_matches_fast_path() -> None:
    """The regular tracer API (a host's provider) and the fast path give the same tree."""
    _, fast = run_scenario()
    mem = InMemorySpanExporter()
    host = TracerProvider()
    host.add_span_processor(SimpleSpanProcessor(mem))
    exporter = OtelExporter(tracer_provider=host)
    assert not exporter.owns_provider
    inst = BackendInstrumentation(exporters=[exporter], model_name="dummy-7b")
    scenario(inst)
    inst.close()
    slow = list(mem.get_finished_spans())
    assert shape(slow) == shape(fast)
    # the host's provider is not shut down by us: it still records
    with host.get_tracer("t").start_as_current_span("after"):
        pass
    assert mem.get_finished_spans()[-1].name == "after"


def test_events_carry_trace_and_span_ids(tmp_path: Path) -> None:
    mem = InMemorySpanExporter()
    trace_file = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(
        exporters=[TraceWriter(trace_file), OtelExporter(span_exporter=mem, batch=False)],
    )
    with inst.run(suite="ids"), inst.probe("p"), inst.view("ft"):
        inst.cached("next_token_dist", "ft", "one", 8, lambda: 1.0)
        inst.cached("next_token_dist", "ft", "one", 8, lambda: 1.0)
        inst.cached_batch("next_token_dist", "ft", ["two", "three"], 8, lambda i: [2.0] * len(i))
    inst.close()
    spans = list(mem.get_finished_spans())
    (run,) = by_name(spans, "swayscope.run")
    (view,) = by_name(spans, "swayscope.view")
    forward_ids = {f"{sid(f):016x}" for f in by_name(spans, "swayscope.forward")}
    trace_hex = f"{tid(view):032x}"  # the probe's trace, not the run's
    assert tid(view) != tid(run)
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert line["trace_id"] == trace_hex
        if line["hit"]:
            assert line["span_id"] == f"{sid(view):016x}"  # the enclosing span
        else:
            assert line["span_id"] in forward_ids
    assert {ln["span_id"] for ln in lines if not ln["hit"]} == forward_ids


def test_hit_spans_option() -> None:
    mem = InMemorySpanExporter()
    inst = BackendInstrumentation(
        exporters=[OtelExporter(span_exporter=mem, batch=False, hit_spans=True)]
    )
    with inst.run(), inst.probe("p"), inst.view("base"):
        for _ in range(3):
            inst.cached("rolling_logprob", "base", "text", 0, lambda: 1.0)
    inst.close()
    spans = list(mem.get_finished_spans())
    hits = by_name(spans, "swayscope.cache_hit")
    (view,) = by_name(spans, "swayscope.view")
    assert len(hits) == 2
    for h in hits:
        assert h.parent is not None and h.parent.span_id == sid(view)
        assert (h.attributes or {})["swayscope.prompt_hash"] == prompt_hash("text")
        assert (h.attributes or {})["swayscope.cache.hit"] is True
    assert (view.attributes or {})["swayscope.cache.hits"] == 2


def test_prompt_text_only_when_captured() -> None:
    for capture in (False, True):
        mem = InMemorySpanExporter()
        exporter = OtelExporter(span_exporter=mem, batch=False, capture_prompts=capture)
        inst = BackendInstrumentation(exporters=[exporter], capture_prompts=capture)
        with inst.run(), inst.view("ft"):
            inst.cached("next_token_dist", "ft", "secret prompt", 8, lambda: 1.0)
        inst.close()
        (fwd,) = by_name(list(mem.get_finished_spans()), "swayscope.forward")
        everything = repr([dict(s.attributes or {}) for s in mem.get_finished_spans()])
        assert ("secret prompt" in everything) is capture
        if capture:
            assert (fwd.attributes or {})["swayscope.prompts"] == ("secret prompt",)


def test_traceparent_makes_the_run_a_child_of_the_outer_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outer_trace, outer_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = {"TRACEPARENT": f"00-{outer_trace}-{outer_span}-01"}
    _, spans = run_scenario(env=env)
    (run,) = by_name(spans, "swayscope.run")
    assert run.parent is not None and f"{run.parent.span_id:016x}" == outer_span
    assert run.parent.is_remote
    assert f"{tid(run):032x}" == outer_trace
    # the probes' traces stay small: their own, linked to the run in the outer trace
    for probe in by_name(spans, "swayscope.probe"):
        assert probe.parent is None and f"{tid(probe):032x}" != outer_trace
        assert [link.context.span_id for link in probe.links] == [sid(run)]

    _, spans = run_scenario(env={"TRACEPARENT": "garbage"})
    (run,) = by_name(spans, "swayscope.run")
    assert run.parent is None
    assert "TRACEPARENT" in caplog.text


def test_sampler_and_service_name_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-eval")
    _, spans = run_scenario()
    assert spans and spans[0].resource.attributes["service.name"] == "my-eval"
    _, spans = run_scenario(service_name="explicit")
    assert spans[0].resource.attributes["service.name"] == "explicit"


def test_sampled_out_runs_export_nothing_and_point_nowhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    mem = InMemorySpanExporter()
    trace_file = tmp_path / "t.jsonl"
    inst = BackendInstrumentation(
        exporters=[TraceWriter(trace_file), OtelExporter(span_exporter=mem, batch=False)]
    )
    with inst.run(), inst.view("ft"):
        inst.cached("next_token_dist", "ft", "x", 8, lambda: 1.0)
        inst.cached("next_token_dist", "ft", "x", 8, lambda: 1.0)
    inst.close()
    assert mem.get_finished_spans() == ()
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert len(lines) == 2
    assert all(line["trace_id"] is None and line["span_id"] is None for line in lines)


class FailingExporter(SpanExporter):
    def __init__(self, raise_: bool = False) -> None:
        self.raise_ = raise_
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.raise_:
            raise ConnectionError("collector gone")
        return SpanExportResult.FAILURE


@pytest.mark.parametrize("raise_", [False, True])
def test_undeliverable_spans_are_counted(raise_: bool) -> None:
    exporter = OtelExporter(span_exporter=FailingExporter(raise_), schedule_delay_s=0.05)
    inst = BackendInstrumentation(exporters=[exporter])
    scenario(inst)
    inst.close()
    n_spans = 2 + 2 + 3 + inst.stats.forward_calls  # run root and outcome, probes, views
    assert inst.health.spans_dropped == n_spans
    assert exporter.spans_dropped == n_spans
    assert inst.health.exporter_errors() == {}  # delivery failures are drops, not crashes


class BlockingExporter(SpanExporter):
    """Blocks every export until released (bounded): a collector that does not answer."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.delivered = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10.0)
        self.delivered += len(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def blocking() -> Iterator[BlockingExporter]:
    exporter = BlockingExporter()
    yield exporter
    exporter.release.set()


def test_full_queue_drops_are_counted(blocking: BlockingExporter) -> None:
    exporter = OtelExporter(span_exporter=blocking, max_queue_size=8, schedule_delay_s=0.01)
    inst = BackendInstrumentation(exporters=[exporter])
    with inst.run(), inst.view("ft"):
        for i in range(40):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
            if i == 0:
                time.sleep(0.1)  # let the worker take the first batch and block on it
    blocking.release.set()
    inst.close()
    total = 40 + 3  # the run's root and outcome, the view
    assert inst.health.spans_dropped > 0
    assert blocking.delivered + inst.health.spans_dropped == total


def test_a_stuck_collector_never_holds_the_run(blocking: BlockingExporter) -> None:
    """Flush at run end and shutdown are bounded; what could not go out is counted."""
    exporter = OtelExporter(
        span_exporter=blocking, schedule_delay_s=0.01, flush_timeout_s=0.3, shutdown_timeout_s=0.5
    )
    inst = BackendInstrumentation(exporters=[exporter])
    t0 = time.perf_counter()
    with inst.run(), inst.view("ft"):
        for i in range(20):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
        time.sleep(0.1)  # the worker is now stuck in an export
        for i in range(20, 30):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
    run_s = time.perf_counter() - t0
    inst.close()
    total_s = time.perf_counter() - t0
    assert run_s < 0.1 + 0.3 + 0.5, run_s  # the run-end flush waits 0.3 s at most
    assert total_s < run_s + 0.5 + 0.5, total_s
    assert inst.health.spans_dropped >= 10  # everything still queued when we gave up
    assert inst.health.spans_dropped <= 33  # every span: 30 calls, run root and outcome, view


def test_spans_from_several_threads_share_the_view() -> None:
    mem = InMemorySpanExporter()
    inst = BackendInstrumentation(
        exporters=[OtelExporter(span_exporter=mem, batch=False)], cache_maxsize=1024
    )

    def work(t: int) -> None:
        for i in range(50):
            inst.cached("next_token_dist", "ft", f"t{t}-{i % 25}", 8, lambda: 1.0)

    with inst.run(), inst.probe("p"), inst.view("ft"):
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
    inst.close()
    spans = list(mem.get_finished_spans())
    (view,) = by_name(spans, "swayscope.view")
    forwards = by_name(spans, "swayscope.forward")
    assert len(forwards) == inst.stats.forward_calls == 100
    assert all(f.parent is not None and f.parent.span_id == sid(view) for f in forwards)
    assert (view.attributes or {})["swayscope.cache.hits"] == inst.stats.cache_hits == 100


# -- configuration -------------------------------------------------------------------------


def test_endpoint_resolution() -> None:
    t = resolve_otlp_target("http://collector:4318", None, {})
    assert t is not None and t.endpoint == "http://collector:4318/v1/traces"
    assert t.protocol == "http/protobuf"
    t = resolve_otlp_target("http://collector:4318/custom/path", "http", {})
    assert t is not None and t.endpoint == "http://collector:4318/custom/path"
    t = resolve_otlp_target("collector:4317", "grpc", {})
    assert t is not None and (t.endpoint, t.protocol) == ("http://collector:4317", "grpc")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    t = resolve_otlp_target(None, None, env)
    assert t is not None and t.protocol == "grpc" and t.source == "OTEL_EXPORTER_OTLP_ENDPOINT"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/base"}
    t = resolve_otlp_target(None, None, env)
    assert t is not None and t.endpoint == "http://c:4318/base/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://t:4318/exact"
    t = resolve_otlp_target(None, None, env)
    assert t is not None and t.endpoint == "http://t:4318/exact"
    assert resolve_otlp_target(None, None, {}) is None
    t = resolve_otlp_target(None, "grpc", {}, default=True)
    assert t is not None and t.endpoint == "http://localhost:4317"


@pytest.mark.parametrize(
    ("kwargs", "env", "names"),
    [
        ({"otlp_endpoint": "htp://c:4318"}, {}, ["htp://c:4318", "--otlp-endpoint"]),
        ({"otlp_endpoint": "http://collector:99999"}, {}, ["99999", "--otlp-endpoint"]),
        ({"otlp_endpoint": "http://"}, {}, ["--otlp-endpoint", "no host"]),
        ({"otlp_endpoint": "collector:4318"}, {}, ["collector:4318", "scheme"]),
        ({"otlp_protocol": "http/json"}, {}, ["http/json", "--otlp-protocol"]),
        (
            {},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"},
            ["not a url", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        ),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, ["udp", "OTEL_EXPORTER_OTLP_PROTOCOL"]),
        ({}, {"OTEL_TRACES_EXPORTER": "zipkin"}, ["zipkin", "OTEL_TRACES_EXPORTER"]),
    ],
)
def test_bad_otlp_settings_name_value_and_source(
    kwargs: dict[str, str], env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(TelemetryConfigError) as err:
        cli_settings(env=env, **kwargs)
    for name in names:
        assert name in str(err.value)
    with pytest.raises(TelemetryConfigError):
        cli_exporters(env=env, **kwargs)


def test_bad_endpoint_argument_names_the_argument() -> None:
    with pytest.raises(TelemetryConfigError, match=r"OtelExporter\(endpoint=\.\.\.\)"):
        OtelExporter(endpoint="::nonsense::")


def test_build_exporters_turns_otel_on_from_flag_or_env() -> None:
    assert cli_exporters(env={}) == []
    (exp,) = cli_exporters(otlp_endpoint="http://127.0.0.1:4318", env={})
    assert isinstance(exp, OtelExporter) and exp.owns_provider
    assert exp.target is not None and exp.target.source == "--otlp-endpoint"
    exp.shutdown()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    (exp,) = cli_exporters(env=env)
    assert isinstance(exp, OtelExporter)
    assert exp.target is not None and exp.target.protocol == "grpc"
    exp.shutdown()
    assert cli_exporters(env={**env, "OTEL_SDK_DISABLED": "true"}) == []
    assert cli_exporters(env={**env, "OTEL_TRACES_EXPORTER": "none"}) == []


def _python(code: str, tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_global_host_provider_is_used_as_is(tmp_path: Path) -> None:
    out = _python(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from swayscope.instrumentation import BackendInstrumentation
        from swayscope.instrumentation.exporters.factory import build_exporters
        from swayscope.instrumentation.settings import resolve_settings
        mem = InMemorySpanExporter()
        host = TracerProvider()
        host.add_span_processor(SimpleSpanProcessor(mem))
        trace.set_tracer_provider(host)
        (exp,) = build_exporters(resolve_settings(env={}), env={})
        assert exp.tracer_provider is host and not exp.owns_provider
        inst = BackendInstrumentation(exporters=[exp])
        with trace.get_tracer("app").start_as_current_span("app-request") as outer:
            with inst.run(suite="s"), inst.view("ft"):
                inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
        inst.close()
        spans = {s.name: s for s in mem.get_finished_spans()}
        assert spans["swayscope.run"].parent.span_id == outer.get_span_context().span_id
        print(sorted(spans))
        """,
        tmp_path,
    )
    assert "swayscope.forward" in out and "app-request" in out


def test_spans_are_flushed_at_exit(tmp_path: Path) -> None:
    """No close(): the atexit hook delivers what the batch processor still holds."""
    out_file = tmp_path / "spans.txt"
    _python(
        f"""
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        from swayscope.instrumentation import BackendInstrumentation
        from swayscope.instrumentation.exporters.otel import OtelExporter
        class ToFile(SpanExporter):
            def export(self, spans):
                with open({str(out_file)!r}, "a") as fh:
                    fh.writelines(s.name + "\\n" for s in spans)
                return SpanExportResult.SUCCESS
        exp = OtelExporter(span_exporter=ToFile(), schedule_delay_s=60)
        inst = BackendInstrumentation(exporters=[exp])
        inst.force_flush = lambda timeout_s=5.0: True  # keep the spans queued until exit
        with inst.run(), inst.view("ft"):
            inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
        """,
        tmp_path,
    )
    assert sorted(out_file.read_text().split()) == [
        "swayscope.forward", "swayscope.run", "swayscope.run.outcome", "swayscope.view",
    ]


def test_importing_instrumentation_pulls_in_no_telemetry_library(tmp_path: Path) -> None:
    out = _python(
        """
        import sys
        import swayscope.instrumentation
        import swayscope.instrumentation.settings
        import swayscope.instrumentation.exporters.factory
        from swayscope.instrumentation.exporters.factory import build_exporters
        from swayscope.instrumentation.settings import resolve_settings
        assert build_exporters(resolve_settings(env={}), env={}) == []
        print(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("opentelemetry", "prometheus_client")))
        """,
        tmp_path,
    )
    assert out.strip() == "[]"
