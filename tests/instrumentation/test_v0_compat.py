"""The v0 module's names and behaviours, taken literally (the module swayscope grew from).

Everything here is written the way code against the v0 module was written:
v0's names, imported from ``swayscope.instrumentation``, used with the
v0's arguments, checked against v0's counter meanings.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from swayscope.instrumentation import (
    _MISS,
    BackendInstrumentation,
    BackendStats,
    CacheOp,
    ForwardCache,
    TraceWriter,
    _prompt_hash,
    _TraceEvent,
)

V0_TRACE_FIELDS = ("ts", "probe", "view_id", "prompt_hash", "top_k", "op", "wall_ms", "hit")
V0_STATS_FIELDS = (
    "cache_hits",
    "cache_misses",
    "forward_passes",
    "scoring_wall_s",
    "batches_sent",
    "batched_prompts",
    "max_batch_size",
)
V0_STATS_KEYS = (*V0_STATS_FIELDS, "hit_rate", "avg_batch_size")


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- names ---------------------------------------------------------------------------------


def test_v0_names_import_from_one_module() -> None:
    import swayscope.instrumentation as mod

    for name in (
        "ForwardCache",
        "TraceWriter",
        "_TraceEvent",
        "BackendStats",
        "BackendInstrumentation",
        "_MISS",
        "_prompt_hash",
        "CacheOp",
    ):
        assert hasattr(mod, name), name
    assert CacheOp is str


def test_prompt_hash_is_the_v0_hash() -> None:
    import hashlib

    expected = hashlib.sha1(b"hello", usedforsecurity=False).hexdigest()[:12]
    assert _prompt_hash("hello") == expected
    assert len(_prompt_hash("")) == 12


# -- ForwardCache ------------------------------------------------------------------------------


def test_forward_cache_get_put_len_clear() -> None:
    cache = ForwardCache(maxsize=4)
    assert cache.maxsize == 4
    key = ("next_token_dist", "base", _prompt_hash("a"), 5)
    assert cache.get(key) is _MISS
    assert len(cache) == 0
    cache.put(key, [1, 2])
    assert cache.get(key) == [1, 2]
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
    assert cache.get(key) is _MISS


def test_forward_cache_default_maxsize_is_v0_default() -> None:
    assert ForwardCache().maxsize == 256


def test_miss_sentinel_tells_a_miss_from_a_stored_none() -> None:
    cache = ForwardCache(maxsize=2)
    cache.put(("k",), None)
    got = cache.get(("k",))
    assert got is None
    assert got is not _MISS
    assert cache.get(("other",)) is _MISS


def test_forward_cache_evicts_least_recently_used() -> None:
    cache = ForwardCache(maxsize=2)
    cache.put(("a",), 1)
    cache.put(("b",), 2)
    assert cache.get(("a",)) == 1  # bump a: b is now least recent
    cache.put(("c",), 3)
    assert cache.get(("b",)) is _MISS
    assert cache.get(("a",)) == 1
    assert cache.get(("c",)) == 3
    assert len(cache) == 2
    cache.put(("a",), 10)  # overwrite bumps too
    cache.put(("d",), 4)
    assert cache.get(("c",)) is _MISS
    assert cache.get(("a",)) == 10


@pytest.mark.parametrize("bad", [0, -1, -256])
def test_forward_cache_rejects_non_positive_maxsize(bad: int) -> None:
    with pytest.raises(ValueError, match=f"got {bad}"):
        ForwardCache(maxsize=bad)


# -- TraceWriter / _TraceEvent -----------------------------------------------------------------


def v0_event(**overrides: Any) -> _TraceEvent:
    fields: dict[str, Any] = {
        "ts": 1700000000.5,
        "probe": "delta_kl",
        "view_id": "base",
        "prompt_hash": _prompt_hash("hi"),
        "top_k": 8,
        "op": "next_token_dist",
        "wall_ms": 1.25,
        "hit": False,
    }
    fields.update(overrides)
    return _TraceEvent(**fields)


def test_trace_event_has_the_v0_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(_TraceEvent)]
    assert tuple(names[: len(V0_TRACE_FIELDS)]) == V0_TRACE_FIELDS
    # Positional construction, as v0 allowed.
    ev = _TraceEvent(1.0, None, "ft", "abc", 3, "logprob_of", 0.5, True)
    assert (ev.ts, ev.probe, ev.view_id, ev.hit) == (1.0, None, "ft", True)


def test_trace_writer_none_is_a_no_op(tmp_path: Path) -> None:
    writer = TraceWriter(None)
    writer.write(v0_event())
    writer.close()
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_trace_writer_writes_v0_fields_and_only_adds(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "trace.jsonl"  # parents are created, as in v0
    writer = TraceWriter(path)
    writer.write(v0_event())
    writer.write(v0_event(hit=True, wall_ms=0.01, probe=None))
    writer.close()
    lines = read_lines(path)
    assert len(lines) == 2
    first = lines[0]
    for name in V0_TRACE_FIELDS:
        assert name in first, name
    assert first["ts"] == 1700000000.5
    assert first["probe"] == "delta_kl"
    assert first["view_id"] == "base"
    assert first["prompt_hash"] == _prompt_hash("hi")
    assert first["top_k"] == 8
    assert first["op"] == "next_token_dist"
    assert first["wall_ms"] == 1.25
    assert first["hit"] is False
    assert lines[1]["hit"] is True
    assert lines[1]["probe"] is None
    # Anything beyond v0's fields is an addition, never a renamed v0 field.
    added = set(first) - set(V0_TRACE_FIELDS)
    assert "schema" in added
    assert first["schema"] == 1
    assert not added & {"timestamp", "view", "hash", "k", "operation", "duration_ms", "cached"}


def test_trace_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    for _ in range(2):
        w = TraceWriter(path)
        w.write(v0_event())
        w.close()
    assert len(read_lines(path)) == 2


# -- BackendStats ------------------------------------------------------------------------------


def test_backend_stats_v0_fields_settable_and_derived() -> None:
    stats = BackendStats()
    for name in V0_STATS_FIELDS:
        assert getattr(stats, name) == 0
    assert stats.hit_rate == 0.0
    assert stats.avg_batch_size == 0.0
    assert stats.total_lookups == 0
    stats.cache_hits = 3
    stats.cache_misses = 1
    stats.forward_passes = 1
    stats.scoring_wall_s = 0.5
    stats.batches_sent = 2
    stats.batched_prompts = 5
    stats.max_batch_size = 4
    assert stats.total_lookups == 4
    assert stats.hit_rate == 0.75
    assert stats.avg_batch_size == 2.5
    d = stats.to_dict()
    for key in V0_STATS_KEYS:
        assert key in d, key
    assert d["cache_hits"] == 3
    assert d["hit_rate"] == 0.75
    assert d["avg_batch_size"] == 2.5
    assert d["scoring_wall_s"] == 0.5
    json.dumps(d)
    assert BackendStats(cache_hits=1, cache_misses=1).hit_rate == 0.5


# -- BackendInstrumentation ----------------------------------------------------------------------


def test_instrumentation_owns_cache_stats_trace(tmp_path: Path) -> None:
    inst = BackendInstrumentation(cache_maxsize=7, trace_path=tmp_path / "t.jsonl")
    assert isinstance(inst.cache, ForwardCache)
    assert inst.cache.maxsize == 7
    assert isinstance(inst.stats, BackendStats)
    assert isinstance(inst.trace, TraceWriter)
    inst.close()
    inst.close()


def test_instrumentation_defaults_have_no_trace(tmp_path: Path) -> None:
    inst = BackendInstrumentation()
    assert inst.cache.maxsize == 256
    assert inst.cached("op", "base", "p", 1, lambda: 41) == 41
    inst.close()


def test_instrumentation_rejects_bad_maxsize() -> None:
    with pytest.raises(ValueError, match="got 0"):
        BackendInstrumentation(cache_maxsize=0)


def test_cached_counts_like_v0(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(cache_maxsize=16, trace_path=path)
    calls: list[str] = []

    def compute(p: str) -> str:
        calls.append(p)
        return p.upper()

    inst.set_current_probe("delta_kl")
    assert inst.cached("next_token_dist", "base", "a", 5, lambda: compute("a")) == "A"
    assert inst.cached("next_token_dist", "base", "a", 5, lambda: compute("a")) == "A"
    inst.set_current_probe(None)
    assert inst.cached("next_token_dist", "ft", "a", 5, lambda: compute("a")) == "A"
    # top_k and op are part of the key.
    assert inst.cached("next_token_dist", "base", "a", 6, lambda: compute("a")) == "A"
    assert inst.cached("rolling_logprob", "base", "a", 5, lambda: compute("a")) == "A"
    assert calls == ["a"] * 4
    s = inst.stats
    assert (s.cache_hits, s.cache_misses, s.forward_passes) == (1, 4, 4)
    assert (s.batches_sent, s.batched_prompts, s.max_batch_size) == (0, 0, 0)
    assert s.scoring_wall_s > 0
    inst.close()
    lines = read_lines(path)
    assert [ln["hit"] for ln in lines] == [False, True, False, False, False]
    assert [ln["probe"] for ln in lines] == ["delta_kl", "delta_kl", None, None, None]
    assert [ln["view_id"] for ln in lines] == ["base", "base", "ft", "base", "base"]
    assert lines[0]["prompt_hash"] == _prompt_hash("a")
    assert lines[3]["top_k"] == 6
    assert lines[4]["op"] == "rolling_logprob"


def test_cached_returns_a_stored_none_as_a_hit() -> None:
    inst = BackendInstrumentation()
    n = 0

    def compute() -> None:
        nonlocal n
        n += 1

    assert inst.cached("logprob_of", "base", "x", 0, compute) is None
    assert inst.cached("logprob_of", "base", "x", 0, compute) is None
    assert n == 1
    assert inst.stats.cache_hits == 1


def test_cached_batch_counts_like_v0(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=path)
    seen: list[list[int]] = []

    def compute_misses(prompts: list[str]) -> Any:
        def run(idx: list[int]) -> list[str]:
            seen.append(list(idx))
            return [prompts[i] + "!" for i in idx]

        return run

    first = ["a", "b", "c"]
    assert inst.cached_batch("next_token_dist", "base", first, 4, compute_misses(first)) == [
        "a!",
        "b!",
        "c!",
    ]
    second = ["b", "d", "a", "e"]
    assert inst.cached_batch("next_token_dist", "base", second, 4, compute_misses(second)) == [
        "b!",
        "d!",
        "a!",
        "e!",
    ]
    third = ["a", "e"]  # all hits: no forward at all
    assert inst.cached_batch("next_token_dist", "base", third, 4, compute_misses(third)) == [
        "a!",
        "e!",
    ]
    assert seen == [[0, 1, 2], [1, 3]]
    s = inst.stats
    assert s.cache_hits == 4
    assert s.cache_misses == 5
    assert s.forward_passes == 5  # computed prompts
    assert s.batches_sent == 2
    assert s.batched_prompts == 5
    assert s.max_batch_size == 3
    assert s.avg_batch_size == 2.5
    inst.close()
    lines = read_lines(path)
    assert len(lines) == 9  # one line per prompt, as v0
    assert sum(1 for ln in lines if ln["hit"]) == 4


def test_cached_batch_empty_and_none_results() -> None:
    inst = BackendInstrumentation()
    assert inst.cached_batch("op", "base", [], 1, lambda idx: []) == []
    assert inst.cached_batch("op", "base", ["x"], 1, lambda idx: [None]) == [None]
    assert inst.cached_batch("op", "base", ["x"], 1, lambda idx: ["never"]) == [None]
    assert inst.stats.cache_hits == 1
    assert inst.stats.batches_sent == 1


@pytest.mark.parametrize("returned", [1, 3])
def test_cached_batch_wrong_count_is_a_runtime_error_naming_both(returned: int) -> None:
    inst = BackendInstrumentation()
    with pytest.raises(RuntimeError) as info:
        inst.cached_batch("op", "base", ["a", "b"], 1, lambda idx: ["v"] * returned)
    msg = str(info.value)
    assert f"returned {returned}" in msg
    assert "2 misses" in msg
    assert len(inst.cache) == 0


def test_cached_batch_wrong_count_says_backend_bug_as_dlm_sway_expects() -> None:
    """dlm-sway's tests (after 0.1.0) match this error on "backend bug"."""
    inst = BackendInstrumentation()
    with pytest.raises(RuntimeError, match="backend bug"):
        inst.cached_batch("next_token_dist", "base", ["p1", "p2", "p3"], 32, lambda idx: [0])


def test_assigning_a_new_trace_writer_redirects_output(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    inst = BackendInstrumentation(trace_path=old)
    inst.cached("op", "base", "one", 1, lambda: 1)
    inst.trace = TraceWriter(new)
    inst.cached("op", "base", "two", 1, lambda: 2)
    inst.cached("op", "base", "one", 1, lambda: 1)
    inst.close()
    assert [ln["prompt_hash"] for ln in read_lines(old)] == [_prompt_hash("one")]
    assert [ln["prompt_hash"] for ln in read_lines(new)] == [
        _prompt_hash("two"),
        _prompt_hash("one"),
    ]


def test_assigning_a_trace_to_an_untraced_instrumentation(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    inst = BackendInstrumentation()
    inst.cached("op", "base", "before", 1, lambda: 0)
    inst.trace = TraceWriter(path)
    inst.cached("op", "base", "after", 1, lambda: 0)
    inst.trace = TraceWriter(None)  # turning it off again
    inst.cached("op", "base", "off", 1, lambda: 0)
    inst.close()
    assert [ln["prompt_hash"] for ln in read_lines(path)] == [_prompt_hash("after")]


# -- a program written against v0, run unchanged -------------------------------------------

V0_STYLE_PROGRAM = textwrap.dedent(
    '''
    """A backend written against the v0 module, in its three-line-glue style."""
    import json
    import sys
    from pathlib import Path

    from swayscope.instrumentation import BackendInstrumentation, TraceWriter, _MISS


    class View:
        def __init__(self, inst, view_id):
            self._inst = inst
            self.id = view_id
            self.computed = 0

        def _compute_next_token_dist(self, prompt, top_k=256):
            self.computed += 1
            return {"prompt_len": len(prompt), "top_k": top_k, "view": self.id}

        def next_token_dist(self, prompt, *, top_k=256):
            return self._inst.cached(
                "next_token_dist", self.id, prompt, top_k,
                lambda: self._compute_next_token_dist(prompt, top_k=top_k),
            )

        def next_token_dist_batch(self, prompts, *, top_k=256):
            return self._inst.cached_batch(
                "next_token_dist", self.id, prompts, top_k,
                lambda idx: [self._compute_next_token_dist(prompts[i], top_k) for i in idx],
            )


    trace_path = Path(sys.argv[1])
    inst = BackendInstrumentation(cache_maxsize=64, trace_path=trace_path)
    base = View(inst, "base")
    inst.set_current_probe("delta_kl")
    a = base.next_token_dist("hello", top_k=5)
    b = base.next_token_dist("hello", top_k=5)
    assert a == b == {"prompt_len": 5, "top_k": 5, "view": "base"}
    batch = base.next_token_dist_batch(["hello", "world", "again"], top_k=5)
    assert batch[0] == a and batch[1]["prompt_len"] == 5
    inst.set_current_probe(None)
    assert inst.cache.get(("nope",)) is _MISS
    stats = inst.stats
    print(json.dumps({
        "computed": base.computed,
        "hits": stats.cache_hits,
        "misses": stats.cache_misses,
        "forward_passes": stats.forward_passes,
        "batches_sent": stats.batches_sent,
        "batched_prompts": stats.batched_prompts,
        "max_batch_size": stats.max_batch_size,
        "hit_rate": stats.hit_rate,
        "to_dict_keys": sorted(stats.to_dict()),
        "cache_len": len(inst.cache),
    }))
    inst.close()
    '''
)


def test_v0_style_program_runs_unchanged(tmp_path: Path) -> None:
    program = tmp_path / "v0_style.py"
    program.write_text(V0_STYLE_PROGRAM, encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    proc = subprocess.run(
        [sys.executable, str(program), str(trace)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["computed"] == 3
    assert out["hits"] == 2
    assert out["misses"] == 3
    assert out["forward_passes"] == 3
    assert out["batches_sent"] == 1
    assert out["batched_prompts"] == 2
    assert out["max_batch_size"] == 2
    assert out["hit_rate"] == 0.4
    assert out["cache_len"] == 3
    for key in V0_STATS_KEYS:
        assert key in out["to_dict_keys"]
    lines = read_lines(trace)
    assert len(lines) == 5
    for line in lines:
        for name in V0_TRACE_FIELDS:
            assert name in line
    assert {ln["probe"] for ln in lines} == {"delta_kl"}
