"""Trace layout: the run's trace, a linked trace per unit of work, chunks that bound them,
and what the run and probe spans say when things go wrong."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter, RootFirstSpanProcessor

SECRET = "the secret prompt 31337"


def traced(**kwargs: object) -> tuple[BackendInstrumentation, InMemorySpanExporter, OtelExporter]:
    mem = InMemorySpanExporter()
    otel = OtelExporter(span_exporter=mem, batch=False, **kwargs)  # type: ignore[arg-type]
    return BackendInstrumentation(exporters=[otel]), mem, otel


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def by_trace(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    out: dict[int, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(ids(s)[0], []).append(s)
    return out


def test_a_long_probe_is_cut_into_linked_chunks_of_at_most_the_bound() -> None:
    inst, mem, otel = traced(max_spans_per_trace=10)
    with inst.run(suite="chunks") as run_handle, inst.probe("long", "delta_kl") as probe:
        with inst.view("ft"):
            for i in range(25):
                inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
                inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)  # hit
        probe.status = "pass"
    inst.close()
    spans = list(mem.get_finished_spans())
    # the run's root and outcome, 25 calls, 4 chunks of probe + view
    assert otel.spans_delivered == len(spans) == 2 + 25 + 2 * 4
    traces = by_trace(spans)
    assert max(len(t) for t in traces.values()) <= 10
    (run,) = named(spans, "swayscope.run")
    chunks = sorted(named(spans, "swayscope.probe"), key=lambda s: s.start_time or 0)
    assert [attrs(c)["swayscope.chunk.index"] for c in chunks] == [0, 1, 2, 3]
    for previous, chunk in itertools.pairwise([None, *chunks]):
        assert chunk.parent is None and attrs(chunk)["swayscope.run_id"] == run_handle.run_id
        assert attrs(chunk)["swayscope.probe"] == "long"
        links = [(link.context.span_id, dict(link.attributes or {})) for link in chunk.links]
        expected = [(ids(run)[1], {"swayscope.link": "run"})]
        if previous is not None:
            expected.append((ids(previous)[1], {"swayscope.link": "previous_chunk"}))
            assert previous.end_time == chunk.start_time
        assert links == expected
        (view,) = named(traces[ids(chunk)[0]], "swayscope.view")
        assert view.parent is not None and view.parent.span_id == ids(chunk)[1]
        assert attrs(view)["swayscope.view_id"] == "ft"
    # counts on a chunk run from the probe's start: the last chunk has the totals
    assert [attrs(c)["swayscope.forward.calls"] for c in chunks] == [8, 16, 24, 25]
    assert attrs(chunks[-1])["swayscope.cache.hits"] == 25
    assert "swayscope.probe.status" not in attrs(chunks[0])
    assert attrs(chunks[-1])["swayscope.probe.status"] == "pass"
    (outcome,) = named(spans, "swayscope.run.outcome")
    assert attrs(outcome)["swayscope.forward.calls"] == 25


def test_work_outside_any_probe_is_bounded_and_linked_too() -> None:
    """A view in the run is a unit of its own; a model call outside any view, a trace of one."""
    inst, mem, _ = traced()
    with inst.run() as handle:
        inst.cached("next_token_dist", "bare", "lone", 8, lambda: 1.0)
        with inst.view("base"):
            inst.cached("next_token_dist", "base", "x", 8, lambda: 1.0)
    inst.close()
    spans = list(mem.get_finished_spans())
    (run,) = named(spans, "swayscope.run")
    (view,) = named(spans, "swayscope.view")
    lone, inside = sorted(named(spans, "swayscope.forward"), key=lambda s: s.start_time or 0)
    for root in (lone, view):
        assert root.parent is None and ids(root)[0] != ids(run)[0]
        assert [link.context.span_id for link in root.links] == [ids(run)[1]]
        assert attrs(root)["swayscope.run_id"] == handle.run_id
    assert inside.parent is not None and inside.parent.span_id == ids(view)[1]
    assert by_trace(spans)[ids(run)[0]] == [run, *named(spans, "swayscope.run.outcome")]


def test_a_run_that_raises_is_an_error_with_a_redacted_exception_event() -> None:
    inst, mem, _ = traced()

    def fail() -> float:
        raise ValueError(f"cannot tokenize {SECRET!r}")

    with pytest.raises(ValueError), inst.run(total_probes=1), inst.view("ft"):
        inst.cached("next_token_dist", "ft", SECRET, 8, fail)
    inst.close()
    spans = list(mem.get_finished_spans())
    (run,) = named(spans, "swayscope.run.outcome")
    assert run.status.status_code is StatusCode.ERROR
    assert attrs(run)["swayscope.run.status"] == "error"
    for span in (run, *named(spans, "swayscope.forward")):
        (event,) = span.events
        assert event.name == "exception" and event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert str(event.attributes["exception.message"]).startswith("cannot tokenize '<prompt ")
        assert str(event.attributes["exception.stacktrace"]).startswith("Traceback")
    everything = repr([
        (s.status.description, attrs(s), [dict(e.attributes or {}) for e in s.events])
        for s in spans
    ])
    assert SECRET not in everything


def test_a_probe_stopped_by_ctrl_c_is_not_run_not_an_error() -> None:
    inst, mem, _ = traced()
    with pytest.raises(KeyboardInterrupt), inst.run(total_probes=2):
        with inst.probe("done") as handle:
            handle.status = "pass"
        with inst.probe("stopped"), inst.view("ft"):
            raise KeyboardInterrupt
    inst.close()
    spans = list(mem.get_finished_spans())
    (run,) = named(spans, "swayscope.run.outcome")
    (done, stopped) = sorted(named(spans, "swayscope.probe"), key=lambda s: s.start_time or 0)
    assert attrs(done)["swayscope.probe"] == "done"
    assert attrs(stopped)["swayscope.probe.status"] == "not_run"
    assert stopped.status.status_code is StatusCode.UNSET and stopped.events == ()
    assert attrs(run)["swayscope.run.status"] == "interrupted"
    assert attrs(run)["swayscope.run.probes_done"] == 1
    assert attrs(run)["swayscope.run.probes_errored"] == 0
    assert run.status.status_code is StatusCode.UNSET


def test_a_host_provider_gets_root_first_delivery_by_wrapping_its_processor() -> None:
    """The same bounded, linked traces through a host's provider; with its processor wrapped
    in RootFirstSpanProcessor, each trace's root is exported before its other spans."""
    mem = InMemorySpanExporter()
    host = TracerProvider()
    host.add_span_processor(RootFirstSpanProcessor(SimpleSpanProcessor(mem)))
    inst = BackendInstrumentation(
        exporters=[OtelExporter(tracer_provider=host, max_spans_per_trace=8)]
    )
    with inst.run():
        for p in range(2):
            with inst.probe(f"p{p}"), inst.view("ft"):
                for i in range(10):
                    inst.cached("next_token_dist", "ft", f"{p}-{i}", 8, lambda: 1.0)
    inst.close()
    spans = list(mem.get_finished_spans())
    assert len(spans) == 2 + 20 + 2 * 2 * 2  # run root and outcome; 2 chunks of probe + view
    for trace in by_trace(spans).values():
        assert len(trace) <= 8
        assert trace[0].parent is None  # the root came first
        assert all(s.parent is not None for s in trace[1:])


def test_bound_below_the_minimum_is_a_config_error() -> None:
    with pytest.raises(TelemetryConfigError, match="max_spans_per_trace=3"):
        OtelExporter(span_exporter=InMemorySpanExporter(), batch=False, max_spans_per_trace=3)
    with pytest.raises(TelemetryConfigError, match="chunk_seconds=0"):
        OtelExporter(span_exporter=InMemorySpanExporter(), batch=False, chunk_seconds=0)
