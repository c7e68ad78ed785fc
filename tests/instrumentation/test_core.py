"""Issue 2, "Better than v0": every point, asserted on the core itself."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sway_testing import Recorder

from swayscope.errors import BackendError, ConfigError, TracePathError
from swayscope.instrumentation import (
    BackendInstrumentation,
    CacheLookup,
    Event,
    Exporter,
    ForwardCache,
    ForwardCall,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    TraceWriter,
    ViewEntered,
    ViewExited,
    measure_bytes,
    prompt_hash,
)


class Boom(Exporter):
    name = "boom"

    def __init__(self) -> None:
        self.attempts = 0

    def export(self, event: Event) -> None:
        self.attempts += 1
        raise RuntimeError("collector unreachable")

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        raise RuntimeError("flush failed")


@dataclasses.dataclass(frozen=True)
class Scored:
    """A result record that reports its token count, like TokenDist."""

    values: np.ndarray[Any, np.dtype[np.float64]]
    n_tokens: int


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def make(**kwargs: Any) -> tuple[BackendInstrumentation, Recorder]:
    rec = Recorder()
    return BackendInstrumentation(exporters=[rec], **kwargs), rec


# -- event fields ---------------------------------------------------------------------------------


def test_miss_event_carries_every_field() -> None:
    inst, rec = make(run_id="run-abc")

    def compute() -> Scored:
        time.sleep(0.01)
        return Scored(np.zeros(3), n_tokens=7)

    before = time.time_ns()
    with inst.probe("delta_kl"):
        inst.cached("next_token_dist", "scaled_0.5", "the prompt", 16, compute)
    after = time.time_ns()
    (ev,) = rec.lookups()
    assert ev.run_id == "run-abc" == inst.run_id
    assert ev.probe == "delta_kl"
    assert ev.view_id == "scaled_0.5"
    assert ev.view_kind == "scaled"
    assert ev.op == "next_token_dist"
    assert ev.prompt_hash == prompt_hash("the prompt")
    assert ev.top_k == 16
    assert ev.hit is False
    assert ev.batch_id
    assert ev.batch_size == 1
    assert ev.n_tokens == 7
    assert ev.error is None
    # The *start* time and the duration: start is before the compute's sleep.
    assert before <= ev.start_ns <= after
    assert ev.duration_s >= 0.01
    assert ev.start_ns + ev.duration_s * 1e9 <= after + 1e6
    (call,) = rec.calls()
    assert call.batch_id == ev.batch_id
    assert call.batch_size == 1
    assert call.prompt_hashes == [prompt_hash("the prompt")]
    assert call.n_tokens == 7
    assert call.start_ns == ev.start_ns
    assert call.error is None


def test_hit_event_fields() -> None:
    inst, rec = make()
    inst.cached("logprob_of", "ft", "p", 0, lambda: 1.5)
    rec.events.clear()
    inst.set_current_probe("perplexity_shift")
    assert inst.cached("logprob_of", "ft", "p", 0, lambda: 99.0) == 1.5
    (ev,) = rec.lookups()
    assert rec.calls() == []  # a hit is no model call
    assert ev.hit is True
    assert ev.probe == "perplexity_shift"
    assert ev.view_kind == "ft"
    assert ev.run_id == inst.run_id
    assert ev.duration_s >= 0
    assert ev.start_ns <= time.time_ns()


def test_rows_of_one_forward_call_share_a_batch_id() -> None:
    inst, rec = make()
    inst.cached_batch("next_token_dist", "base", ["a", "b", "c"], 4, lambda idx: list(idx))
    inst.cached_batch("next_token_dist", "base", ["d", "e"], 4, lambda idx: list(idx))
    lookups = rec.lookups()
    assert len(lookups) == 5
    first, second = lookups[:3], lookups[3:]
    assert len({e.batch_id for e in first}) == 1
    assert len({e.batch_id for e in second}) == 1
    assert first[0].batch_id != second[0].batch_id
    assert all(e.batch_size == 3 for e in first)
    assert all(e.batch_size == 2 for e in second)
    calls = rec.calls()
    assert [c.batch_id for c in calls] == [first[0].batch_id, second[0].batch_id]
    assert [c.batch_size for c in calls] == [3, 2]


def test_n_tokens_only_when_the_value_reports_it() -> None:
    inst, rec = make()
    inst.cached("op", "base", "plain", 1, lambda: 3.0)
    inst.cached_batch(
        "op", "base", ["x", "yy"], 1, lambda idx: [Scored(np.zeros(1), n_tokens=i + 2) for i in idx]
    )
    plain, x, yy = rec.lookups()
    assert plain.n_tokens is None
    assert (x.n_tokens, yy.n_tokens) == (2, 3)
    assert rec.calls()[1].n_tokens == 5
    assert inst.stats.n_tokens == 5


def test_jsonl_keeps_seed_names_and_adds_schema(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=path, run_id="r1")
    with inst.probe("null_adapter"):
        inst.cached("next_token_dist", "base", "hello", 8, lambda: Scored(np.ones(2), 4))
        inst.cached("next_token_dist", "base", "hello", 8, lambda: Scored(np.ones(2), 4))
        inst.cached_batch("rolling_logprob", "ft", ["a", "b"], 0, lambda idx: [1.0, 2.0])
    inst.close()
    lines = read_lines(path)
    assert len(lines) == 4
    for line in lines:
        assert line["schema"] == 1
        assert line["run_id"] == "r1"
        for name in ("ts", "probe", "view_id", "prompt_hash", "top_k", "op", "wall_ms", "hit"):
            assert name in line
        assert line["probe"] == "null_adapter"
        # ts is when the lookup finished (seed meaning); start_ts is when it began.
        assert line["start_ts"] <= line["ts"]
        assert math.isclose(line["ts"] - line["start_ts"], line["wall_ms"] / 1000, abs_tol=1e-3)
    miss, hit, b1, b2 = lines
    assert miss["hit"] is False and hit["hit"] is True
    assert miss["n_tokens"] == 4
    assert miss["batch_size"] == 1
    assert b1["batch_id"] == b2["batch_id"] is not None
    assert b1["batch_size"] == 2
    assert b1["view_id"] == "ft" and b1["view_kind"] == "ft"


# -- forward_calls vs forward_passes --------------------------------------------------------------


def test_forward_calls_count_model_invocations() -> None:
    inst = BackendInstrumentation()
    inst.cached("op", "base", "solo", 1, lambda: 0)
    inst.cached_batch("op", "base", [f"p{i}" for i in range(8)], 1, lambda idx: [0] * len(idx))
    inst.cached_batch("op", "base", ["p0", "q"], 1, lambda idx: [0] * len(idx))
    s = inst.stats
    assert s.forward_calls == 3
    assert s.forward_passes == 10
    assert s.batches_sent == 2
    assert s.cache_hits == 1
    d = s.to_dict()
    assert d["forward_calls"] == 3 and d["forward_passes"] == 10


# -- threads --------------------------------------------------------------------------------------


def test_many_threads_end_with_exact_totals() -> None:
    inst, rec = make(cache_maxsize=512)
    n_threads, per_thread, n_keys = 16, 500, 40
    computes: Counter[str] = Counter()
    compute_lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def compute(key: str) -> str:
        with compute_lock:
            computes[key] += 1
        time.sleep(0.002)
        return "v-" + key

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                key = f"k{(i * 7 + t) % n_keys}"
                got = inst.cached("op", "base", key, 1, lambda key=key: compute(key))
                assert got == "v-" + key
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    total = n_threads * per_thread
    s = inst.stats
    assert s.cache_hits + s.cache_misses == total
    assert s.cache_misses == n_keys
    assert s.forward_passes == n_keys
    assert s.forward_calls == n_keys
    assert set(computes.values()) == {1}
    assert len(computes) == n_keys
    lookups = rec.lookups()
    assert len(lookups) == total
    assert sum(1 for e in lookups if not e.hit) == n_keys


def test_concurrent_callers_of_one_missing_key_compute_once() -> None:
    inst, rec = make()
    n = 8
    computes = 0
    lock = threading.Lock()
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def compute() -> list[int]:
        nonlocal computes
        with lock:
            computes += 1
        time.sleep(0.05)
        return [1, 2, 3]

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = inst.cached("next_token_dist", "base", "same", 4, compute)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert computes == 1
    assert all(r == [1, 2, 3] for r in results)
    assert inst.stats.cache_misses == 1
    assert inst.stats.cache_hits == n - 1
    assert sum(1 for e in rec.lookups() if e.hit) == n - 1


def test_waiters_recompute_when_the_leader_fails() -> None:
    inst = BackendInstrumentation()
    n = 4
    attempts = 0
    lock = threading.Lock()
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def compute() -> str:
        nonlocal attempts
        with lock:
            attempts += 1
            first = attempts == 1
        time.sleep(0.03)
        if first:
            raise OSError("transient")
        return "ok"

    def worker() -> None:
        barrier.wait()
        try:
            outcomes.append(inst.cached("op", "base", "k", 1, compute))
        except OSError:
            outcomes.append("raised")

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes) == ["ok", "ok", "ok", "raised"]
    assert attempts == 2
    assert inst.stats.compute_errors == 1


def test_reentrant_lookup_of_the_key_being_computed_does_not_deadlock() -> None:
    # Seed code may answer one op from another that shares its cache entry; the inner
    # lookup runs inside the outer compute, on the same thread, for the same key.
    inst = BackendInstrumentation()
    result: dict[str, int] = {}

    def outer() -> int:
        return inst.cached("fwd", "base", "p", 0, lambda: 41) + 1

    th = threading.Thread(
        target=lambda: result.setdefault("v", inst.cached("fwd", "base", "p", 0, outer)),
        daemon=True,
    )
    th.start()
    th.join(5)
    assert not th.is_alive(), "nested cached() on the key being computed deadlocked"
    assert result["v"] == 42  # v0's answer: the outer compute's value
    assert inst.cached("fwd", "base", "p", 0, lambda: 0) == 42
    s = inst.stats
    assert (s.cache_misses, s.forward_passes, s.cache_hits) == (2, 2, 1)


# -- cache bounds and read-only values -----------------------------------------------------------


def test_cache_bounded_by_entries_counts_evictions() -> None:
    inst = BackendInstrumentation(cache_maxsize=3)
    for i in range(5):
        inst.cached("op", "base", f"p{i}", 1, lambda: 0)
    assert len(inst.cache) == 3
    assert inst.cache.evictions == 2
    assert inst.stats.cache_evictions == 2


def test_cache_bounded_by_bytes_measured_with_nbytes() -> None:
    inst = BackendInstrumentation(cache_maxsize=100, cache_max_bytes=20_000)
    arr_bytes = 1000 * 8
    for i in range(5):
        inst.cached("op", "base", f"p{i}", 1, lambda: np.zeros(1000))
    assert len(inst.cache) == 2  # 3 * 8 kB would not fit in 20 kB
    assert 2 * arr_bytes <= inst.cache.nbytes <= 20_000
    assert inst.cache.evictions == 3
    assert inst.stats.cache_evictions == 3
    assert inst.cache.max_bytes == 20_000


def test_measure_bytes_measures_arrays_and_records() -> None:
    arr = np.zeros(4096)
    assert arr.nbytes <= measure_bytes(arr) < arr.nbytes + 1024
    rec = Scored(np.zeros(2048), n_tokens=3)
    assert 2048 * 8 <= measure_bytes(rec) < 2048 * 8 + 2048
    both = [np.zeros(100), np.zeros(100, dtype=np.float32)]
    assert measure_bytes(both) >= 800 + 400


def test_value_larger_than_the_byte_budget_is_not_stored() -> None:
    cache = ForwardCache(maxsize=10, max_bytes=1000)
    cache.put(("small",), np.zeros(10))
    cache.put(("big",), np.zeros(1000))
    assert ("big",) not in cache
    assert ("small",) in cache
    assert cache.nbytes <= 1000


def test_values_are_handed_out_read_only() -> None:
    inst = BackendInstrumentation()
    first = inst.cached("op", "base", "p", 1, lambda: np.arange(4.0))
    with pytest.raises(ValueError):
        first[0] = 100.0
    again = inst.cached("op", "base", "p", 1, lambda: np.arange(4.0))
    with pytest.raises(ValueError):
        again[1] = 100.0
    assert list(again) == [0.0, 1.0, 2.0, 3.0]
    rec = inst.cached("op", "base", "q", 1, lambda: Scored(np.ones(3), 2))
    with pytest.raises(ValueError):
        rec.values[0] = 5.0
    (batched,) = inst.cached_batch("op", "base", ["r"], 1, lambda idx: [np.ones(2)])
    with pytest.raises(ValueError):
        batched[0] = 0.0


# -- cached_batch -------------------------------------------------------------------------------


def test_identical_prompts_in_one_batch_are_computed_once() -> None:
    inst, rec = make()
    sent: list[list[int]] = []
    prompts = ["a", "b", "a", "c", "b", "a"]

    def compute(idx: list[int]) -> list[str]:
        sent.append(list(idx))
        return [prompts[i].upper() for i in idx]

    out = inst.cached_batch("op", "base", prompts, 1, compute)
    assert out == ["A", "B", "A", "C", "B", "A"]
    assert sent == [[0, 1, 3]]
    s = inst.stats
    assert s.forward_passes == 3
    assert s.batched_prompts == 3
    assert s.cache_misses == 3
    assert s.cache_hits == 3
    assert s.forward_calls == 1
    assert len(rec.lookups()) == 6


def test_key_params_keep_requests_that_differ_apart() -> None:
    inst, _ = make()
    computed: list[tuple[str, int]] = []

    def one(prompt: str, limit: int) -> str:
        computed.append((prompt, limit))
        return f"{prompt}:{limit}"

    assert inst.cached("generate", "ft", "p", 0, lambda: one("p", 8), key_params=(8,)) == "p:8"
    assert inst.cached("generate", "ft", "p", 0, lambda: one("p", 9), key_params=(9,)) == "p:9"
    assert inst.cached("generate", "ft", "p", 0, lambda: one("p", 8), key_params=(8,)) == "p:8"
    batch = inst.cached_batch(
        "generate", "ft", ["p", "q"], 0, lambda idx: [one("pq"[i], 9) for i in idx],
        key_params=(9,),
    )
    assert batch == ["p:9", "q:9"]
    assert computed == [("p", 8), ("p", 9), ("q", 9)]
    assert inst.stats.cache_hits == 2


def test_plan_groups_become_one_forward_call_each() -> None:
    inst, rec = make()
    sent: list[list[int]] = []

    def plan(misses: list[int]) -> list[list[int]]:
        return [misses[i : i + 2] for i in range(0, len(misses), 2)]

    def compute(idx: list[int]) -> list[int]:
        sent.append(list(idx))
        return [i * 10 for i in idx]

    prompts = [f"p{i}" for i in range(5)]
    out = inst.cached_batch("op", "base", prompts, 1, compute, plan=plan)
    assert out == [0, 10, 20, 30, 40]
    assert sent == [[0, 1], [2, 3], [4]]
    s = inst.stats
    assert s.forward_calls == 3
    assert s.batches_sent == 3
    assert s.forward_passes == 5
    assert s.max_batch_size == 2
    assert [c.batch_size for c in rec.calls()] == [2, 2, 1]
    assert len({e.batch_id for e in rec.lookups()}) == 3


def test_plan_that_does_not_partition_the_misses_is_rejected() -> None:
    inst = BackendInstrumentation()
    with pytest.raises(BackendError, match="partition"):
        inst.cached_batch("op", "base", ["a", "b"], 1, lambda idx: idx, plan=lambda m: [m[:1]])


# -- compute errors -----------------------------------------------------------------------------


def test_compute_that_raises_stores_nothing_marks_counts_reraises(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec], trace_path=path)
    boom = ZeroDivisionError("division by zero in forward")

    def bad() -> float:
        raise boom

    with pytest.raises(ZeroDivisionError) as info:
        inst.cached("op", "base", "p", 1, bad)
    assert info.value is boom
    assert len(inst.cache) == 0
    (ev,) = rec.lookups()
    assert ev.hit is False
    assert ev.error is not None and "ZeroDivisionError" in ev.error
    (call,) = rec.calls()
    assert call.error == ev.error
    assert call.exception is boom
    s = inst.stats
    assert s.compute_errors == 1
    assert s.forward_passes == 0
    # Nothing was stored: the next call computes.
    assert inst.cached("op", "base", "p", 1, lambda: 2.0) == 2.0
    assert s.forward_passes == 1
    inst.close()
    lines = read_lines(path)
    assert "ZeroDivisionError" in lines[0]["error"]
    assert lines[1]["error"] is None


def test_batch_compute_that_raises_stores_nothing() -> None:
    inst, rec = make()

    def bad(idx: list[int]) -> list[int]:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError):
        inst.cached_batch("op", "base", ["a", "b"], 1, bad)
    assert len(inst.cache) == 0
    assert inst.stats.compute_errors == 1
    assert inst.stats.batches_sent == 0
    lookups = rec.lookups()
    assert len(lookups) == 2
    assert all(e.error and "MemoryError" in e.error for e in lookups)
    assert len({e.batch_id for e in lookups}) == 1


# -- probe scoping -------------------------------------------------------------------------------


def test_probe_context_sets_and_restores_nesting_safe() -> None:
    inst, rec = make()
    assert inst.current_probe is None
    inst.set_current_probe("outer_by_setter")
    with inst.probe("a"):
        assert inst.current_probe == "a"
        with inst.probe("b"):
            assert inst.current_probe == "b"
            inst.cached("op", "base", "in-b", 1, lambda: 0)
        assert inst.current_probe == "a"
        inst.cached("op", "base", "in-a", 1, lambda: 0)
    assert inst.current_probe == "outer_by_setter"
    with pytest.raises(KeyError), inst.probe("c"):
        raise KeyError("probe failed")
    assert inst.current_probe == "outer_by_setter"
    inst.set_current_probe(None)
    inst.cached("op", "base", "none", 1, lambda: 0)
    assert [e.probe for e in rec.lookups()] == ["b", "a", None]
    ended = [e for e in rec.events if isinstance(e, ProbeEnded)]
    assert [(e.probe, e.status) for e in ended] == [("b", "pass"), ("a", "pass"), ("c", "error")]
    assert ended[-1].error is not None and "probe failed" in ended[-1].error


def test_run_probe_view_events_reach_a_user_exporter() -> None:
    inst, rec = make()
    with inst.run(suite="s", total_probes=1) as run, inst.probe("delta_kl") as p:
        with inst.view("ft"):
            inst.cached("op", "ft", "x", 1, lambda: 0)
        p.status = "fail"
    kinds = [type(e) for e in rec.events]
    assert kinds == [
        RunStarted,
        ProbeStarted,
        ViewEntered,
        ForwardCall,
        CacheLookup,
        ViewExited,
        ProbeEnded,
        RunEnded,
    ]
    assert all(getattr(e, "run_id", None) == run.run_id for e in rec.events)
    assert rec.flushed >= 1  # the run flushes its exporters at the end
    inst.close()
    assert rec.shut


# -- privacy -------------------------------------------------------------------------------------


SECRET = "my secret prompt text 12345"


def test_prompt_text_never_leaves_by_default(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec], trace_path=path)
    inst.cached("op", "base", SECRET, 1, lambda: 0)
    inst.cached("op", "base", SECRET, 1, lambda: 0)
    inst.cached_batch("op", "base", [SECRET + "b", SECRET + "b"], 1, lambda idx: [0] * len(idx))
    with pytest.raises(ValueError):
        inst.cached("op", "base", SECRET + "err", 1, lambda: int("x"))
    inst.close()
    assert SECRET not in path.read_text(encoding="utf-8")
    assert all("prompt" not in line for line in read_lines(path))
    for event in rec.events:
        for name in event._fields:
            assert SECRET not in repr(getattr(event, name)), (type(event), name)
    assert all(e.prompt is None for e in rec.lookups())


def test_capture_prompts_opt_in_writes_prompt(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    inst = BackendInstrumentation(trace_path=path, capture_prompts=True)
    inst.cached("op", "base", SECRET, 1, lambda: 0)
    inst.cached("op", "base", SECRET, 1, lambda: 0)
    inst.cached_batch("op", "base", ["b1", "b2"], 1, lambda idx: [0] * len(idx))
    inst.close()
    assert [ln["prompt"] for ln in read_lines(path)] == [SECRET, SECRET, "b1", "b2"]


# -- failing exporters -----------------------------------------------------------------------------


def test_an_exporter_that_raises_never_stops_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    boom, rec = Boom(), Recorder()
    path = tmp_path / "t.jsonl"
    inst = BackendInstrumentation(exporters=[boom, rec], trace_path=path)
    with caplog.at_level(logging.WARNING, logger="swayscope"):
        with inst.run(), inst.probe("p"):
            for i in range(5):
                assert inst.cached("op", "base", f"k{i % 3}", 1, lambda: 1) == 1
            inst.cached_batch("op", "base", ["x", "y"], 1, lambda idx: [2] * len(idx))
        inst.close()
    errors = inst.health.exporter_errors()
    # run start/end, probe start/end, 3 miss calls + 5 lookups, 1 batch call + 2 lookups;
    # plus the failing force_flush at the end of the run.
    assert errors == {"boom": boom.attempts + 1}
    assert boom.attempts == len(rec.events)
    assert "recorder" not in errors
    assert len(rec.lookups()) == 7
    assert len(read_lines(path)) == 7
    warnings = [r for r in caplog.records if r.name == "swayscope.instrumentation.exporter"]
    assert len(warnings) == 1
    assert "boom" in warnings[0].getMessage()


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_maxsize_names_the_value(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"maxsize.*got {bad}"):
        BackendInstrumentation(cache_maxsize=bad)
    with pytest.raises(ConfigError, match=rf"got {bad}"):
        ForwardCache(maxsize=bad)


@pytest.mark.parametrize("bad", [0, -1024])
def test_bad_cache_max_bytes_names_the_value(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"cache_max_bytes.*got {bad}"):
        BackendInstrumentation(cache_max_bytes=bad)


def test_unwritable_trace_path_fails_at_construction(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    bad = blocker / "sub" / "trace.jsonl"
    with pytest.raises(TracePathError) as info:
        BackendInstrumentation(trace_path=bad)
    assert str(bad) in str(info.value)
    assert isinstance(info.value, OSError)
    with pytest.raises(OSError, match="not_a_dir"):
        TraceWriter(blocker / "trace.jsonl")


def test_trace_path_that_is_a_directory_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(TracePathError, match=str(tmp_path)):
        TraceWriter(tmp_path)


# -- import weight -------------------------------------------------------------------------------


def test_import_pulls_in_no_heavy_library() -> None:
    code = (
        "import swayscope.instrumentation, sys; print(sorted(m for m in "
        "('torch','transformers','peft','opentelemetry','prometheus_client') "
        "if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- usable: a stored value that does not answer the request is a miss ---------------------------


def test_unusable_cached_value_is_recomputed_and_replaced() -> None:
    inst = BackendInstrumentation()
    light = {"full": False}
    full = {"full": True}
    inst.cached("op", "v", "p", 1, lambda: light)
    assert inst.cached("op", "v", "p", 1, lambda: full) is light  # no predicate: a hit
    got = inst.cached("op", "v", "p", 1, lambda: full, usable=lambda r: r["full"])
    assert got is full
    s = inst.stats
    assert (s.cache_hits, s.cache_misses, s.forward_calls) == (1, 2, 2)
    assert inst.cached("op", "v", "p", 1, lambda: light, usable=lambda r: r["full"]) is full
    assert s.cache_hits == 2


def test_unusable_values_in_a_batch_are_recomputed_together() -> None:
    inst = BackendInstrumentation()
    inst.cached_batch("op", "v", ["a", "b"], 1, lambda idx: [{"full": False} for _ in idx])
    inst.cached("op", "v", "c", 1, lambda: {"full": True})
    seen: list[list[int]] = []

    def compute(idx: list[int]) -> list[dict[str, bool]]:
        seen.append(idx)
        return [{"full": True} for _ in idx]

    out = inst.cached_batch("op", "v", ["a", "b", "c"], 1, compute, usable=lambda r: r["full"])
    assert seen == [[0, 1]] and all(r["full"] for r in out)
    again = inst.cached_batch("op", "v", ["a", "b"], 1, compute, usable=lambda r: r["full"])
    assert seen == [[0, 1]] and again == out[:2]


def test_forward_call_sums_tokens_computed_and_reused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Record:
        n_tokens: int
        tokens_computed: int
        tokens_reused: int

    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec])
    inst.cached_batch(
        "op", "v", ["a", "b"], 1, lambda idx: [Record(10, 3 + 7 * i, 7 - 7 * i) for i in idx]
    )
    (call,) = rec.calls()
    assert (call.n_tokens, call.n_tokens_computed, call.n_tokens_reused) == (20, 13, 7)
    assert (inst.stats.tokens_computed, inst.stats.prefix_tokens_reused) == (13, 7)
    inst.cached("op", "v", "plain", 1, lambda: 1.0)  # values that do not say: None
    assert rec.calls()[-1].n_tokens_computed is None


def test_events_built_positionally_on_the_hit_path_keep_their_field_meanings() -> None:
    """The hit path builds CacheLookup positionally (speed): every field lands where its
    name says."""
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec], capture_prompts=True)
    inst.cached("next_token_dist", "scaled_0.5", "p", 8, lambda: 1)
    with inst.probe("probe-a"):
        inst.cached("next_token_dist", "scaled_0.5", "p", 8, lambda: 1)
    hit = rec.lookups()[-1]
    assert (hit.run_id, hit.op, hit.view_id, hit.view_kind) == (
        inst.run_id, "next_token_dist", "scaled_0.5", "scaled",
    )
    assert (hit.probe, hit.prompt_hash, hit.top_k, hit.hit) == (
        "probe-a", prompt_hash("p"), 8, True,
    )
    assert hit.start_ns > 0 and 0 <= hit.duration_s < 1
    assert (hit.batch_id, hit.batch_size, hit.batch_duration_s, hit.n_tokens, hit.error) == (
        None, None, None, None, None,
    )
    assert hit.prompt == "p" and hit.trace_id is None and hit.span_id is None
