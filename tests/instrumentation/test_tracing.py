"""The core's trace layout: places, counts rolled outwards, chunks, sampling, ids."""

from __future__ import annotations

import random

import pytest

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.tracecontext import TraceParent
from swayscope.instrumentation.tracing import Frame, Ids, TraceLayout, TraceSettings, outer_trace


def layout(**kwargs: object) -> TraceLayout:
    return TraceLayout(TraceSettings(**kwargs))  # type: ignore[arg-type]


def test_a_run_is_a_root_and_its_outcome_and_probes_are_units_linked_to_it() -> None:
    lay = layout()
    root, outcome = lay.run_root()
    assert root is not None and outcome is not None
    assert root.parent_span_id is None and outcome.parent_span_id == root.span_id
    assert outcome.trace_id == root.trace_id

    run = Frame("run", "r", "r", root, None)
    probe, rotations = lay.open("probe", "p", "r", run)
    assert rotations == [] and probe.place is not None
    assert probe.place.parent_span_id is None and probe.place.trace_id != root.trace_id
    assert probe.place.chunk == 0
    assert [(k.span_id, k.kind) for k in probe.place.links] == [(root.span_id, "run")]
    view, _ = lay.open("view", "ft", "r", probe)
    assert view.place is not None and view.place.parent_span_id == probe.place.span_id
    call, _, granted = lay.leaf(view)
    assert call is not None and call.parent_span_id == view.place.span_id and granted == 1
    # counts roll outwards as frames close
    view.hits, view.misses, view.calls = 2, 3, 1
    lay.close(view)
    assert (probe.hits, probe.misses, probe.calls) == (2, 3, 1)
    lay.close(probe)
    assert (run.hits, run.misses, run.calls) == (2, 3, 1)
    # a call directly in the run: a trace of its own, linked to the run's root
    lone, _, _ = lay.leaf(run)
    assert lone is not None and lone.parent_span_id is None and lone.chunk == 0
    assert [k.kind for k in lone.links] == ["run"]


def test_a_full_chunk_rotates_its_open_spans_into_a_linked_trace() -> None:
    lay = layout(max_spans_per_trace=8)

    root, _ = lay.run_root()
    run = Frame("run", "r", "r", root, None)
    probe, _ = lay.open("probe", "p", "r", run)
    view, _ = lay.open("view", "ft", "r", probe)
    first_probe = probe.place
    seen = []
    for _ in range(7):
        _, rotations, _ = lay.leaf(view)
        view.calls += 1
        seen.append(rotations)
    rotated = [r for r in seen if r]
    assert len(rotated) == 1
    (outer, inner) = rotated[0]
    assert outer.old == first_probe and outer.new == probe.place
    assert inner.new == view.place and inner.new.parent_span_id == outer.new.span_id
    assert outer.new.chunk == 1 and [k.kind for k in outer.new.links] == ["run", "previous_chunk"]
    assert first_probe is not None and outer.new.links[1].span_id == first_probe.span_id
    assert outer.counts.calls == inner.counts.calls == 6  # the calls of the first chunk


def test_sampling_decides_on_the_trace_id_as_opentelemetry_does() -> None:
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

    ids = Ids()
    for ratio in (0.0, 0.25, 0.5, 1.0):
        settings = TraceSettings(sample_ratio=ratio)
        sampler = TraceIdRatioBased(ratio)
        for _ in range(200):
            trace_id = ids.trace_id()
            ours = settings.sampled(trace_id)
            theirs = sampler.should_sample(None, int(trace_id, 16), "x").decision
            assert ours == (theirs is Decision.RECORD_AND_SAMPLE)
    unsampled = TraceLayout(TraceSettings(outer=TraceParent("a" * 32, "b" * 16, sampled=False)))
    root, outcome = unsampled.run_root()
    assert root is not None and not root.sampled and outcome is not None and not outcome.sampled
    assert root.parent_span_id == "b" * 16 and root.parent_remote


def test_without_a_tracing_exporter_nothing_is_placed() -> None:
    lay = TraceLayout(None)
    assert lay.run_root() == (None, None)
    assert lay.leaf(None)[0] is None


def test_ids_do_not_follow_the_random_module() -> None:
    seen = []
    for _ in range(2):
        random.seed(0)
        ids = Ids()
        seen.append((ids.trace_id(), ids.span_id()))
    assert seen[0] != seen[1]


def test_bad_settings_and_traceparent(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(TelemetryConfigError, match="max_spans_per_trace=3"):
        TraceSettings(max_spans_per_trace=3)
    with pytest.raises(TelemetryConfigError, match="sample_ratio=2"):
        TraceSettings(sample_ratio=2)
    assert outer_trace({"TRACEPARENT": "garbage"}) is None
    assert "TRACEPARENT" in caplog.text
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    parent = outer_trace({"TRACEPARENT": header})
    assert parent is not None and parent.span_id == "00f067aa0ba902b7"
