"""The core's data flows one way and every counter has one writer: single flight on every
path, exact counters under many threads, backends' reports, concurrent runs, immutable
events, ids chosen by the core whatever the exporters' order."""

from __future__ import annotations

import contextvars
import json
import random
import threading
import time
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sway_testing import Recorder

from swayscope.instrumentation import (
    BackendInstrumentation,
    CacheLookup,
    Event,
    Exporter,
    ForwardCall,
    TraceWriter,
    events,
)
from swayscope.instrumentation.stats import BackendStats


def make(**kwargs: Any) -> tuple[BackendInstrumentation, Recorder]:
    rec = Recorder()
    return BackendInstrumentation(exporters=[rec], **kwargs), rec


class Computes:
    """A compute that counts each key it computes, slowly enough for callers to overlap."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.delay_s = delay_s

    def one(self, key: str) -> str:
        with self._lock:
            self.counts[key] += 1
        time.sleep(self.delay_s)
        return "v-" + key

    def batch(self, keys: list[str]) -> Any:
        def compute(indices: list[int]) -> list[str]:
            return [self.one(keys[i]) for i in indices]

        return compute


def test_two_batches_and_a_single_lookup_of_the_same_keys_compute_each_key_once() -> None:
    """Seen before: 3 computations of the same keys and 0 hits."""
    inst, rec = make()
    computes = Computes(delay_s=0.05)
    keys = ["a", "b", "c"]
    barrier = threading.Barrier(3)
    results: dict[str, Any] = {}

    def batch(name: str) -> None:
        barrier.wait()
        results[name] = inst.cached_batch("op", "base", keys, 1, computes.batch(keys))

    def single() -> None:
        barrier.wait()
        results["single"] = inst.cached("op", "base", "b", 1, lambda: computes.one("b"))

    threads = [
        threading.Thread(target=batch, args=("x",)),
        threading.Thread(target=batch, args=("y",)),
        threading.Thread(target=single),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert computes.counts == Counter({"a": 1, "b": 1, "c": 1})
    assert results["x"] == results["y"] == ["v-a", "v-b", "v-c"] and results["single"] == "v-b"
    s = inst.stats
    assert (s.cache_misses, s.cache_hits) == (3, 4)
    assert s.forward_passes == 3
    assert sum(1 for e in rec.lookups() if e.hit) == 4


def test_many_threads_of_mixed_single_and_batched_lookups_end_with_exact_counters() -> None:
    inst, rec = make(cache_maxsize=4096)
    computes = Computes(delay_s=0.001)
    n_threads, rounds, n_keys = 12, 40, 60
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []
    lookups = Counter[int]()
    lookups_lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(t)
        done = 0
        try:
            barrier.wait()
            for _ in range(rounds):
                if rng.random() < 0.5:
                    key = f"k{rng.randrange(n_keys)}"
                    assert inst.cached("op", "base", key, 1, lambda k=key: computes.one(k)) == (
                        "v-" + key
                    )
                    done += 1
                else:
                    keys = [f"k{rng.randrange(n_keys)}" for _ in range(rng.randrange(1, 9))]
                    got = inst.cached_batch("op", "base", keys, 1, computes.batch(keys))
                    assert got == ["v-" + k for k in keys]
                    done += len(keys)
        except BaseException as exc:
            errors.append(exc)
        with lookups_lock:
            lookups[t] = done

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    total = sum(lookups.values())
    distinct = len(computes.counts)
    assert set(computes.counts.values()) == {1}  # each key computed once, on any path
    s = inst.stats
    assert s.cache_hits + s.cache_misses == total
    assert s.cache_misses == s.forward_passes == distinct
    assert len(rec.lookups()) == total
    assert sum(1 for e in rec.lookups() if not e.hit) == distinct


def test_a_batch_waiting_on_a_failed_leader_computes_the_key_itself() -> None:
    inst, _ = make()
    started = threading.Event()

    def failing() -> str:
        started.set()
        time.sleep(0.1)
        raise RuntimeError("leader failed")

    def leader() -> None:
        with pytest.raises(RuntimeError):
            inst.cached("op", "base", "k", 1, failing)

    thread = threading.Thread(target=leader)
    thread.start()
    assert started.wait(5)
    got = inst.cached_batch("op", "base", ["k", "j"], 1, lambda idx: [f"v{i}" for i in idx])
    thread.join(5)
    assert got == ["v0", "v1"]
    assert inst.stats.forward_calls == 3  # the failed one, "j" (with the batch), "k" again
    assert inst.stats.compute_errors == 1


def test_backends_report_what_they_did_and_the_core_counts_it() -> None:
    inst, _ = make()
    with inst.run() as run:
        inst.report(model_invocations=2, prefix_hits=1, oom_splits=1)
        inst.report(prefix_entries=3, prefix_bytes=300, prefix_evictions=1)
        inst.report(prefix_entries=2, prefix_bytes=200)  # a level: set, not added
    inst.report(worker_failures=1)  # outside any run: the instrumentation's counters only
    assert run.stats is not None
    own = (run.stats.model_invocations, run.stats.prefix_hits, run.stats.oom_splits)
    assert own == (2, 1, 1)
    assert (run.stats.prefix_entries, run.stats.prefix_bytes) == (2, 200)
    assert run.stats.worker_failures == 0 and inst.stats.worker_failures == 1
    assert inst.stats.prefix_evictions == 1
    with pytest.raises(ValueError, match="cache_hits"):
        inst.report(cache_hits=1)  # the core's own counters are not reported


def test_no_backend_writes_a_counter_itself() -> None:
    """Backends report; only the instrumentation core writes BackendStats."""
    root = Path(__file__).resolve().parents[2] / "src" / "swayscope"
    counters = {f for f in BackendStats.__dataclass_fields__}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.parent == root / "instrumentation":
            continue  # the core
        text = path.read_text()
        for name in counters:
            for pattern in (f"stats.{name} +=", f"stats.{name} =", f'"{name}", getattr(stats'):
                if pattern in text:
                    offenders.append(f"{path.relative_to(root)}: {pattern}")
    assert offenders == []


def test_runs_in_two_threads_keep_their_own_ids_counters_and_traces() -> None:
    inst, rec = make()
    computes = Computes(delay_s=0.01)
    handles: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def adapter(name: str, keys: list[str]) -> None:
        with inst.run(adapter=name) as run:
            barrier.wait()
            with inst.probe(f"probe-{name}"), inst.view("ft"):
                for key in keys:
                    inst.cached("op", "ft", key, 1, lambda k=key: computes.one(k))
            with inst.view("base"):  # shared: the base view's entries serve both runs
                inst.cached("op", "base", "shared", 1, lambda: computes.one("shared"))
            handles[name] = run

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(adapter, n, ks))
        for n, ks in (("one", ["a", "b"]), ("two", ["c", "d", "e"]))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    one, two = handles["one"], handles["two"]
    assert one.run_id != two.run_id
    # each run's own keys are its misses; "shared" is one run's miss and the other's hit
    assert (one.stats.cache_misses - 2) + (two.stats.cache_misses - 3) == 1
    assert one.stats.cache_hits + two.stats.cache_hits == 1
    assert one.stats.forward_calls + two.stats.forward_calls == inst.stats.forward_calls == 6
    by_run: dict[str, set[str | None]] = {}
    for e in rec.lookups():
        by_run.setdefault(e.run_id, set()).add(e.probe)
    assert by_run[one.run_id] == {"probe-one", None}
    assert by_run[two.run_id] == {"probe-two", None}


def test_events_are_immutable() -> None:
    """No exporter can write into an event: every event type is a named tuple."""
    for event_type in typing.get_args(Event):
        assert issubclass(event_type, tuple), event_type
    ev = events.CacheLookup("r", "op", "v", "base", None, "h", 1, True, 0, 0.0)
    with pytest.raises(AttributeError):
        ev.trace_id = "x"  # type: ignore[misc]


class Snapshot(Exporter):
    """Records each event as it arrives, to compare with what later exporters saw."""

    name = "snapshot"

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def export(self, event: Event) -> None:
        self.seen.append(event)


def _ids_of_run(exporters_first: bool, tmp_path: Path) -> tuple[list[Any], list[Any]]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from swayscope.instrumentation.exporters.otel import OtelExporter

    mem = InMemorySpanExporter()
    trace_file = tmp_path / f"trace-{exporters_first}.jsonl"
    otel = OtelExporter(span_exporter=mem, batch=False)
    jsonl = TraceWriter(trace_file)
    snapshot = Snapshot()
    order: list[Exporter] = [jsonl, snapshot, otel] if exporters_first else [otel, snapshot, jsonl]
    inst = BackendInstrumentation(exporters=order)
    with inst.run(), inst.probe("p"), inst.view("ft"):
        inst.cached_batch("op", "ft", ["a", "b"], 1, lambda idx: [1.0] * len(idx))
        inst.cached("op", "ft", "a", 1, lambda: 2.0)
    inst.close()
    spans = {
        (f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
        for s in mem.get_finished_spans() if s.context is not None
    }
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    calls = [e for e in snapshot.seen if isinstance(e, ForwardCall)]
    hits = [e for e in snapshot.seen if isinstance(e, CacheLookup) and e.hit]
    assert calls and hits
    for e in [*calls, *hits]:
        assert (e.trace_id, e.span_id) in spans  # every pointer names a span that exists
    assert {(line["trace_id"], line["span_id"]) for line in lines} <= spans
    return [(e.trace_id, e.span_id) for e in calls], lines


@pytest.mark.parametrize("jsonl_first", [True, False])
def test_ids_come_from_the_core_whatever_the_exporters_order(
    jsonl_first: bool, tmp_path: Path
) -> None:
    calls, lines = _ids_of_run(jsonl_first, tmp_path)
    assert all(trace_id and span_id for trace_id, span_id in calls)
    assert all(line["trace_id"] and line["span_id"] for line in lines)
