"""Span delivery: every span made is delivered or counted dropped, whatever the collector does."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from exporter_servers import free_port, wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from swayscope.instrumentation import BackendInstrumentation, TelemetryHealth
from swayscope.instrumentation.exporters.jsonl import TraceWriter
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.environment import BatchSettings
from swayscope.instrumentation.exporters.otel.guard import GuardedSpanExporter
from swayscope.instrumentation.exporters.otel.holding import RootFirstSpanProcessor
from swayscope.instrumentation.exporters.otel.processor import (
    CountingBatchSpanProcessor,
    CountingSimpleSpanProcessor,
)
from swayscope.instrumentation.exporters.otel.spans import PresetIds

FAST = BatchSettings(max_queue_size=1024, schedule_delay_s=0.01, max_export_batch_size=16)


class Recording(SpanExporter):
    """Keeps what it accepts; ``fail`` makes it return FAILURE, ``raise_`` makes it raise."""

    def __init__(self, *, fail: bool = False, raise_: bool = False) -> None:
        self.fail = fail
        self.raise_ = raise_
        self.calls = 0
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.raise_:
            raise ConnectionError("collector gone")
        if self.fail:
            return SpanExportResult.FAILURE
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class Blocking(SpanExporter):
    """Blocks every export until released (at most 10 s): a collector that does not answer."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.delivered = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10.0)
        self.delivered += len(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    exporter = Blocking()
    yield exporter
    exporter.release.set()


def tracer_with(processor: SpanProcessor, **kwargs: object) -> tuple[trace.Tracer, TracerProvider]:
    provider = TracerProvider(**kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    return provider.get_tracer("test"), provider


def make_spans(tracer: trace.Tracer, n: int, prefix: str = "s") -> None:
    for i in range(n):
        tracer.start_span(f"{prefix}{i}").end()


def test_batch_processor_delivers_every_span_to_a_healthy_collector() -> None:
    accounting, collector = SpanAccounting(), Recording()
    tracer, provider = tracer_with(CountingBatchSpanProcessor(collector, accounting, FAST))
    make_spans(tracer, 100)
    provider.shutdown()
    assert accounting.delivered_total == len(collector.spans) == 100
    assert accounting.dropped_total == 0
    assert collector.calls >= 100 // FAST.max_export_batch_size


@pytest.mark.parametrize("raise_", [False, True])
def test_collector_down_every_span_is_counted_once(raise_: bool) -> None:
    health, accounting = TelemetryHealth(), SpanAccounting()
    accounting.bind(health)
    collector = Recording(fail=True, raise_=raise_)
    tracer, provider = tracer_with(CountingBatchSpanProcessor(collector, accounting, FAST))
    make_spans(tracer, 100)
    provider.shutdown()
    assert accounting.delivered_total == 0
    assert accounting.dropped_by_reason()["export_failed"] == 100
    assert accounting.dropped_total == health.spans_dropped == 100


def test_full_queue_counts_the_spans_it_refuses(blocking: Blocking) -> None:
    settings = BatchSettings(max_queue_size=8, schedule_delay_s=0.01, max_export_batch_size=4)
    accounting = SpanAccounting()
    tracer, provider = tracer_with(CountingBatchSpanProcessor(blocking, accounting, settings))
    make_spans(tracer, 1)
    assert blocking.entered.wait(5.0)  # the worker is stuck on the first batch
    make_spans(tracer, 50, "more")
    blocking.release.set()
    provider.shutdown()
    refused = accounting.dropped_by_reason()["queue_full"]
    assert refused == 50 - settings.max_queue_size
    assert accounting.delivered_total == blocking.delivered == 51 - refused
    assert accounting.delivered_total + accounting.dropped_total == 51


def test_shutdown_gives_up_on_a_stuck_collector_and_counts_the_rest(blocking: Blocking) -> None:
    accounting = SpanAccounting()
    processor = CountingBatchSpanProcessor(blocking, accounting, FAST, shutdown_timeout_s=0.3)
    tracer, provider = tracer_with(processor)
    make_spans(tracer, 10)
    assert blocking.entered.wait(5.0)
    make_spans(tracer, 20, "queued")
    t0 = time.perf_counter()
    provider.shutdown()
    assert time.perf_counter() - t0 < 0.3 + 0.5
    # the batch stuck in the exporter and the 20 behind it
    assert accounting.dropped_by_reason()["shutdown"] == 30
    make_spans(tracer, 1, "late")  # ended after shutdown
    assert accounting.dropped_by_reason()["shutdown"] == 31
    blocking.release.set()  # the stuck export returns: already counted, not counted again
    assert wait_for(lambda: blocking.delivered > 0, 5.0, 0.02)
    time.sleep(0.05)
    assert accounting.delivered_total == 0
    assert accounting.dropped_total == 31


def test_force_flush_is_bounded_and_reports_success(blocking: Blocking) -> None:
    accounting, collector = SpanAccounting(), Recording()
    settings = BatchSettings(max_queue_size=64, schedule_delay_s=60.0, max_export_batch_size=64)
    processor = CountingBatchSpanProcessor(collector, accounting, settings)
    tracer, provider = tracer_with(processor)
    make_spans(tracer, 5)
    assert processor.force_flush(5000)  # not 60 s: the flush wakes the worker
    assert accounting.delivered_total == 5
    provider.shutdown()

    stuck = CountingBatchSpanProcessor(blocking, SpanAccounting(), FAST, shutdown_timeout_s=0.1)
    tracer, provider = tracer_with(stuck)
    make_spans(tracer, 3)
    t0 = time.perf_counter()
    assert not stuck.force_flush(200)
    assert time.perf_counter() - t0 < 1.0
    provider.shutdown()


def test_simple_processor_counts_each_span() -> None:
    accounting = SpanAccounting()
    good = CountingSimpleSpanProcessor(Recording(), accounting)
    tracer, provider = tracer_with(good)
    make_spans(tracer, 3)
    bad = CountingSimpleSpanProcessor(Recording(raise_=True), accounting)
    bad_tracer, bad_provider = tracer_with(bad)
    make_spans(bad_tracer, 2)
    assert (accounting.delivered_total, accounting.dropped_total) == (3, 2)
    provider.shutdown()
    make_spans(tracer, 1)
    assert accounting.dropped_by_reason()["shutdown"] == 1
    bad_provider.shutdown()


def test_unsampled_spans_are_neither_delivered_nor_dropped() -> None:
    accounting = SpanAccounting()
    tracer, provider = tracer_with(
        CountingBatchSpanProcessor(Recording(), accounting, FAST), sampler=ALWAYS_OFF
    )
    make_spans(tracer, 10)
    provider.shutdown()
    assert (accounting.delivered_total, accounting.dropped_total) == (0, 0)


def test_drops_before_bind_reach_the_health_and_only_the_first_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    accounting = SpanAccounting()
    with caplog.at_level(logging.WARNING):
        accounting.dropped(3, "queue_full")
        accounting.dropped(2, "export_failed", ConnectionError("refused"))
    health = TelemetryHealth()
    accounting.bind(health)
    accounting.dropped(4, "shutdown")
    assert health.spans_dropped == accounting.dropped_total == 9
    warnings = [r for r in caplog.records if "spans were dropped" in r.getMessage()]
    assert len(warnings) == 1 and "queue was full" in warnings[0].getMessage()


# -- root first ----------------------------------------------------------------------------


def test_root_first_holds_a_trace_until_its_root_ends() -> None:
    mem = InMemorySpanExporter()
    holder = RootFirstSpanProcessor(SimpleSpanProcessor(mem))
    tracer, provider = tracer_with(holder)
    root = tracer.start_span("root")
    ctx = trace.set_span_in_context(root)
    child = tracer.start_span("child", context=ctx)
    tracer.start_span("leaf", context=trace.set_span_in_context(child)).end()
    child.end()
    other = tracer.start_span("other root")
    other.end()  # another trace's root goes on at once
    assert [s.name for s in mem.get_finished_spans()] == ["other root"]
    assert holder.held == 2
    root.end()
    assert [s.name for s in mem.get_finished_spans()] == ["other root", "root", "leaf", "child"]
    tracer.start_span("late", context=ctx).end()  # its root already went on: straight on
    assert mem.get_finished_spans()[-1].name == "late" and holder.held == 0
    provider.shutdown()


def test_root_first_is_bounded_and_hands_on_what_it_holds_at_shutdown() -> None:
    mem = InMemorySpanExporter()
    holder = RootFirstSpanProcessor(SimpleSpanProcessor(mem), max_held=3)
    tracer, provider = tracer_with(holder)
    first, second = tracer.start_span("first"), tracer.start_span("second")
    for root in (first, second):
        for i in range(2):
            tracer.start_span(f"{root.name}-{i}", context=trace.set_span_in_context(root)).end()
    # the 4th held span went past the bound: the trace held longest went on, rootless
    assert [s.name for s in mem.get_finished_spans()] == ["first-0", "first-1"]
    assert holder.held == 2
    provider.shutdown()  # never ended roots: what is held is handed on, not lost
    assert [s.name for s in mem.get_finished_spans()][2:] == ["second-0", "second-1"]


def test_root_first_passes_unsampled_spans_through() -> None:
    accounting = SpanAccounting()
    holder = RootFirstSpanProcessor(CountingBatchSpanProcessor(Recording(), accounting, FAST))
    tracer, provider = tracer_with(holder, sampler=ALWAYS_OFF)
    make_spans(tracer, 5)
    assert holder.held == 0
    provider.shutdown()
    assert (accounting.delivered_total, accounting.dropped_total) == (0, 0)


def test_a_full_queue_refuses_the_rest_of_a_trace_whose_root_it_refused(
    blocking: Blocking,
) -> None:
    """No trace reaches the collector without its root, even when the queue overflows."""
    settings = BatchSettings(max_queue_size=2, schedule_delay_s=0.01, max_export_batch_size=1)
    accounting = SpanAccounting()
    processor = CountingBatchSpanProcessor(blocking, accounting, settings, shutdown_timeout_s=2)
    tracer, provider = tracer_with(RootFirstSpanProcessor(processor))
    make_spans(tracer, 1, "stuck")
    assert blocking.entered.wait(5.0)
    make_spans(tracer, 2, "filler")  # the queue is full
    root = tracer.start_span("root")
    for i in range(3):
        tracer.start_span(f"child{i}", context=trace.set_span_in_context(root)).end()
    root.end()  # refused, and so are its children, though the queue drains meanwhile
    blocking.release.set()
    assert wait_for(lambda: accounting.delivered_total == 3, 5.0, 0.01)
    tracer.start_span("late", context=trace.set_span_in_context(root)).end()
    provider.shutdown()
    assert accounting.dropped_by_reason()["queue_full"] == 1 + 3 + 1
    assert accounting.delivered_total == blocking.delivered == 3


def test_spans_held_at_shutdown_are_delivered_or_counted() -> None:
    """Shut down mid-probe (the atexit path): open spans end, and everything held goes out."""
    collector = Recording()
    otel = OtelExporter(span_exporter=collector, schedule_delay_s=0.01)
    inst = BackendInstrumentation(exporters=[otel])
    run = inst.run()
    run.__enter__()
    probe = inst.probe("open")
    probe.__enter__()
    view = inst.view("ft")
    view.__enter__()
    for i in range(20):
        inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
    assert wait_for(lambda: otel.spans_delivered == 1, 2.0, 0.01)  # the run's root, at once
    assert otel.spans_delivered == 1  # the rest held: the probe's root has not ended
    otel.shutdown()
    assert otel.spans_delivered == len(collector.spans) == 1 + 1 + 1 + 20
    assert otel.spans_dropped == 0
    dead = OtelExporter(span_exporter=Recording(fail=True), schedule_delay_s=0.01)
    inst = BackendInstrumentation(exporters=[dead])
    with inst.run(), inst.probe("p"), inst.view("ft"):
        for i in range(20):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
    inst.close()
    assert (dead.spans_delivered, dead.spans_dropped) == (0, 2 + 1 + 1 + 20)


# -- the core's ids ---------------------------------------------------------------------------


def test_preset_ids_apply_to_the_next_span_of_that_thread_only() -> None:
    ids = PresetIds()
    ids.preset(0xABC)
    seen: list[int] = []
    other = threading.Thread(target=lambda: seen.append(ids.generate_span_id()))
    other.start()
    other.join()
    assert seen[0] != 0xABC
    assert ids.generate_span_id() == 0xABC
    assert ids.generate_span_id() not in (0, 0xABC)
    assert ids.is_trace_id_random()
    ids.preset(0xDEF, 0x123)  # a root: its trace id too
    assert (ids.generate_trace_id(), ids.generate_span_id()) == (0x123, 0xDEF)
    assert ids.generate_trace_id() not in (0, 0x123)


def test_ids_do_not_follow_the_random_module() -> None:
    """A program that seeds ``random`` (dlm-sway does) still gets new trace ids per run."""
    seen = []
    for _ in range(2):
        random.seed(0)
        ids = PresetIds()
        seen.append((ids.generate_trace_id(), ids.generate_span_id()))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
    assert all(t > 0 and s > 0 for t, s in seen)


# -- the guard in front of the collector -----------------------------------------------------


def test_guard_fails_fast_on_a_closed_port() -> None:
    inner = Recording()
    guard = GuardedSpanExporter(inner, address=("127.0.0.1", free_port()))
    t0 = time.perf_counter()
    with pytest.raises(OSError):
        guard.export([])
    assert time.perf_counter() - t0 < 0.3
    assert inner.calls == 0 and guard.failing
    t0 = time.perf_counter()
    assert guard.export([]) is SpanExportResult.FAILURE  # refused at once while backing off
    assert time.perf_counter() - t0 < 0.01


def test_guard_backs_off_after_a_failure_and_recovers() -> None:
    inner = Recording(fail=True)
    guard = GuardedSpanExporter(inner, backoff_s=0.1, max_backoff_s=0.4)
    assert guard.export([]) is SpanExportResult.FAILURE
    assert guard.export([]) is SpanExportResult.FAILURE
    assert inner.calls == 1  # the second was refused without a try
    time.sleep(0.15)
    inner.fail = False
    assert guard.export([]) is SpanExportResult.SUCCESS
    assert inner.calls == 2 and not guard.failing
    guard.shutdown()
    assert guard.export([]) is SpanExportResult.FAILURE


# -- through the exporter --------------------------------------------------------------------


def test_forward_spans_match_the_ids_on_events(tmp_path: Path) -> None:
    """Batch mode: the JSONL trace names, with the core's ids, the spans that were delivered."""
    collector = Recording()
    trace_file = tmp_path / "trace.jsonl"
    otel = OtelExporter(span_exporter=collector, schedule_delay_s=0.01)
    inst = BackendInstrumentation(exporters=[TraceWriter(trace_file), otel])
    with inst.run(suite="ids"), inst.probe("p"), inst.view("ft"):
        for i in range(30):
            inst.cached("next_token_dist", "ft", f"prompt {i}", 8, lambda: 1.0)
        inst.cached_batch("next_token_dist", "ft", ["x", "y"], 8, lambda idx: [2.0] * len(idx))
    inst.close()
    forwards = {
        f"{s.context.span_id:016x}": s for s in collector.spans
        if s.name == "swayscope.forward" and s.context is not None
    }
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert len(forwards) == inst.stats.forward_calls == 31
    assert {line["span_id"] for line in lines} == set(forwards)
    (probe,) = (s for s in collector.spans if s.name == "swayscope.probe")
    assert probe.context is not None
    assert {line["trace_id"] for line in lines} == {f"{probe.context.trace_id:032x}"}
    assert otel.spans_delivered == len(collector.spans) == 2 + 1 + 1 + 31
    assert otel.spans_dropped == 0


def test_every_span_made_is_delivered_or_counted_with_a_full_queue(blocking: Blocking) -> None:
    otel = OtelExporter(
        span_exporter=blocking, max_queue_size=4, schedule_delay_s=0.01, shutdown_timeout_s=0.3
    )
    inst = BackendInstrumentation(exporters=[otel])
    with inst.run():
        with inst.probe("first"), inst.view("ft"):
            inst.cached("next_token_dist", "ft", "first", 8, lambda: 1.0)
        assert blocking.entered.wait(5.0)  # the first probe's trace went on, and is stuck
        with inst.probe("second"), inst.view("ft"):
            for i in range(60):
                inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
    inst.close()  # the collector never answers: shutdown gives up
    made = 2 + 2 * 2 + 61
    assert otel.spans_delivered + otel.spans_dropped == made
    assert otel.spans_dropped == inst.health.spans_dropped > 0


def test_a_forked_child_delivers_its_own_spans(tmp_path: Path) -> None:
    """The worker threads are restarted in a forked child, as the SDK's own processor does."""
    script = f"""
import os
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter

class ToFile(SpanExporter):
    def export(self, spans):
        with open(os.path.join({str(tmp_path)!r}, f"spans-{{os.getpid()}}.txt"), "a") as fh:
            fh.writelines(s.name + "\\n" for s in spans)
        return SpanExportResult.SUCCESS

otel = OtelExporter(span_exporter=ToFile(), schedule_delay_s=60)
inst = BackendInstrumentation(exporters=[otel])
pid = os.fork()
with inst.run(suite="child" if pid == 0 else "parent"), inst.view("ft"):
    inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
inst.close()
if pid == 0:
    os._exit(0 if otel.spans_delivered == 4 else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert otel.spans_delivered == 4
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("spans-*.txt"))
    assert len(files) == 2  # parent and child, each its own spans
    for f in files:
        assert sorted(f.read_text().split()) == [
            "swayscope.forward", "swayscope.run", "swayscope.run.outcome", "swayscope.view",
        ]


def test_an_event_type_it_does_not_know_is_ignored() -> None:
    otel = OtelExporter(span_exporter=Recording(), batch=False)
    otel.export(object())  # type: ignore[arg-type]
    otel.shutdown()
    assert (otel.spans_delivered, otel.spans_dropped) == (0, 0)
