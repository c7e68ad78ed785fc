"""Trace reader and ``swayscope trace summarize`` logic (issue 2, point 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation
from swayscope.trace_reader import (
    ANONYMOUS_RUN,
    percentile,
    read_trace,
    render_markdown,
    summarize,
    summarize_command,
)


def v0_line(
    *, probe: str | None, view: str, op: str, wall_ms: float, hit: bool, h: str = "aaaaaaaaaaaa"
) -> dict[str, Any]:
    """Exactly the v0 payload: eight fields, no run_id, no schema."""
    return {
        "ts": 1700000000.0,
        "probe": probe,
        "view_id": view,
        "prompt_hash": h,
        "top_k": 256,
        "op": op,
        "wall_ms": wall_ms,
        "hit": hit,
    }


def new_line(run_id: str, **kw: Any) -> dict[str, Any]:
    batch_id = kw.pop("batch_id", None)
    return {**v0_line(**kw), "schema": 1, "run_id": run_id, "batch_id": batch_id}


def write(path: Path, rows: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


V0_ROWS = [
    v0_line(probe="delta_kl", view="base", op="next_token_dist", wall_ms=10.0, hit=False),
    v0_line(probe="delta_kl", view="base", op="next_token_dist", wall_ms=0.01, hit=True),
    v0_line(probe="delta_kl", view="ft", op="next_token_dist", wall_ms=20.0, hit=False),
    v0_line(probe=None, view="ft", op="rolling_logprob", wall_ms=30.0, hit=False),
]


@pytest.fixture
def v0_trace(tmp_path: Path) -> Path:
    return write(tmp_path / "v0.jsonl", V0_ROWS)


@pytest.fixture
def mixed_trace(tmp_path: Path) -> Path:
    rows = [
        *V0_ROWS,
        new_line("run-aaaa1111", probe="p1", view="base", op="logprob_of", wall_ms=1.0, hit=False),
        new_line(
            "run-bbbb2222",
            probe="p2",
            view="scaled_0.5",
            op="next_token_dist",
            wall_ms=4.0,
            hit=False,
            batch_id="b1",
        ),
        new_line(
            "run-bbbb2222",
            probe="p2",
            view="scaled_0.5",
            op="next_token_dist",
            wall_ms=4.0,
            hit=False,
            batch_id="b1",
        ),
        new_line("run-aaaa1111", probe="p1", view="base", op="logprob_of", wall_ms=0.5, hit=True),
        new_line(
            "run-bbbb2222",
            probe="p3",
            view="null_1_i1.0_r1.0",
            op="rolling_logprob",
            wall_ms=2.0,
            hit=True,
        ),
    ]
    return write(tmp_path / "mixed.jsonl", rows)


# -- reading ---------------------------------------------------------------------------------------


def test_reads_v0_format_as_one_anonymous_run(v0_trace: Path) -> None:
    trace = read_trace(v0_trace)
    assert trace.malformed == 0
    assert len(trace.records) == 4
    assert trace.run_ids() == [None]
    s = summarize(trace)
    assert s is not None
    assert s.run_id is None and s.run_label == ANONYMOUS_RUN
    assert (s.totals.events, s.totals.hits, s.totals.misses) == (4, 1, 3)
    assert s.forward_calls == 3  # v0 misses have no batch_id: one call each
    assert s.totals.total_ms == pytest.approx(60.01)
    assert [g.name for g in s.by_probe] == ["delta_kl", "(none)"]
    assert [g.name for g in s.by_view] == ["ft", "base"]  # by total time
    assert [g.name for g in s.by_op] == ["next_token_dist", "rolling_logprob"]
    dk = s.by_probe[0]
    assert (dk.events, dk.hits, dk.misses) == (3, 1, 2)
    assert dk.hit_rate == pytest.approx(1 / 3)
    assert dk.p50_ms == pytest.approx(10.0)
    assert dk.p95_ms == pytest.approx(float(np.percentile([10.0, 0.01, 20.0], 95)))
    assert [r.wall_ms for r in s.slowest[:2]] == [30.0, 20.0]


def test_default_run_is_the_last_to_start(mixed_trace: Path) -> None:
    trace = read_trace(mixed_trace)
    assert trace.run_ids() == [None, "run-aaaa1111", "run-bbbb2222"]
    s = summarize(trace)
    assert s is not None
    assert s.run_id == "run-bbbb2222"
    assert (s.totals.events, s.totals.hits) == (3, 1)
    assert s.forward_calls == 1  # two rows, one batch_id
    assert [g.name for g in s.by_probe] == ["p2", "p3"]
    assert dict(s.runs) == {None: 4, "run-aaaa1111": 2, "run-bbbb2222": 3}


def test_select_run_by_id_prefix_and_anonymous(mixed_trace: Path) -> None:
    trace = read_trace(mixed_trace)
    for wanted in ("run-aaaa1111", "run-a"):
        s = summarize(trace, wanted)
        assert s is not None and s.run_id == "run-aaaa1111"
        assert s.totals.events == 2
    anon = summarize(trace, ANONYMOUS_RUN)
    assert anon is not None and anon.run_id is None and anon.totals.events == 4
    assert summarize(trace, "run-") is None  # ambiguous prefix
    assert summarize(trace, "nope") is None


def test_malformed_and_truncated_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    good = v0_line(probe="p", view="base", op="op", wall_ms=1.0, hit=False)
    path = tmp_path / "bad.jsonl"
    with path.open("wb") as fh:
        fh.write((json.dumps(good) + "\n").encode())
        fh.write(b"not json at all\n")  # 2
        fh.write(b"[1, 2, 3]\n")  # 3: not an object
        fh.write(b"\n")  # blank: ignored, not counted
        fh.write((json.dumps({**good, "hit": "yes"}) + "\n").encode())  # 5: wrong type
        bad_utf8 = json.dumps(good).encode().replace(b'"p"', b'"\xff\xfe"')
        fh.write(bad_utf8 + b"\n")  # 6: not UTF-8
        fh.write((json.dumps({k: v for k, v in good.items() if k != "wall_ms"}) + "\n").encode())
        fh.write((json.dumps(good) + "\n").encode())  # 8
        fh.write(json.dumps(good).encode()[:25])  # 9: cut off by a crash
    trace = read_trace(path)
    assert len(trace.records) == 2
    assert trace.malformed == 6
    assert trace.malformed_line_numbers == [2, 3, 5, 6, 7, 9]
    assert [r.line for r in trace.records] == [1, 8]


def test_optional_fields_with_wrong_types_are_dropped_not_fatal(tmp_path: Path) -> None:
    row = {
        **v0_line(probe="p", view="base", op="op", wall_ms=1.0, hit=True),
        "run_id": 7,
        "batch_size": "many",
        "top_k": None,
        "schema": 2,
        "future_field": {"x": 1},
    }
    trace = read_trace(write(tmp_path / "t.jsonl", [row]))
    assert trace.malformed == 0
    (rec,) = trace.records
    assert rec.run_id is None and rec.batch_size is None and rec.top_k is None


def test_reads_a_trace_written_by_the_core(tmp_path: Path) -> None:
    path = tmp_path / "core.jsonl"
    inst = BackendInstrumentation(trace_path=path, run_id="core-run")
    backend = DummyBackend(inst=inst)
    with inst.probe("delta_kl"), backend.base() as v:
        v.next_token_dist_batch(["a", "b", "c", "a"], top_k=4)
        v.next_token_dist("b", top_k=4)
    with inst.probe("perplexity_shift"), backend.ft() as v:
        v.rolling_logprob("hello world")
    with pytest.raises(ZeroDivisionError), inst.probe("broken"):
        inst.cached("op", "base", "x", 1, lambda: 1 / 0)
    inst.close()
    s = summarize(read_trace(path))
    assert s is not None
    st = inst.stats
    assert s.run_id == "core-run"
    assert s.totals.hits == st.cache_hits
    assert s.totals.misses == st.cache_misses
    assert s.forward_calls == st.forward_calls
    assert s.totals.errors == 1
    assert s.tokens == st.n_tokens
    assert s.span_s is not None and s.span_s > 0
    assert [g.name for g in s.by_probe] == ["delta_kl", "perplexity_shift", "broken"]


def test_percentile_matches_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 8.0, 13.0, 0.5]
    for q in (0, 25, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) == 0.0
    assert percentile([4.0], 95) == 4.0


# -- the command and its formats ------------------------------------------------------------


def test_json_format(mixed_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_command(mixed_trace, "run-aaaa1111", "json", 1) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == "run-aaaa1111"
    assert out["totals"]["events"] == 2
    assert out["totals"]["hit_rate"] == 0.5
    assert out["totals"]["forward_calls"] == 1
    assert out["malformed_lines"] == 0
    assert [r["run_id"] for r in out["runs"]] == [None, "run-aaaa1111", "run-bbbb2222"]
    assert out["by_probe"][0]["name"] == "p1"
    for row in out["by_view"] + out["by_op"] + out["by_probe"]:
        assert set(row) >= {"events", "hits", "misses", "hit_rate", "total_ms", "p50_ms", "p95_ms"}
    assert len(out["slowest"]) == 1
    assert out["slowest"][0]["wall_ms"] == 1.0


def test_markdown_format(v0_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_command(v0_trace, None, "md", 2) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Trace summary: run `(no run_id)`")
    for heading in ("## By probe", "## By view", "## By op", "## Slowest 2 events"):
        assert heading in out
    assert "| delta_kl | 3 | 1 | 2 | 33.3% | 30.010 | 10.000 |" in out
    assert "| probe | events | hits | misses | hit rate | total ms | p50 ms | p95 ms |" in out


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    row = v0_line(probe="a|b", view="base", op="op", wall_ms=1.0, hit=False)
    s = summarize(read_trace(write(tmp_path / "t.jsonl", [row])))
    assert s is not None
    assert "| a\\|b |" in render_markdown(s)


def test_terminal_format(mixed_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_command(mixed_trace, None, "terminal", 3) == 0
    out = capsys.readouterr().out
    for text in ("By probe", "By view", "By op", "Slowest 3 events", "run-bbbb2222"):
        assert text in out
    for text in ("p2", "p3", "scaled_0.5", "null_1_i1.0_r1.0", "33.3%", "100.0%"):
        assert text in out


def test_terminal_shows_markup_like_names_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = v0_line(probe="[bold]x[/bold]", view="base", op="op", wall_ms=1.0, hit=False)
    assert summarize_command(write(tmp_path / "t.jsonl", [row]), None, "terminal", 1) == 0
    assert "[bold]x[/bold]" in capsys.readouterr().out


def test_top_zero_lists_no_slow_events(
    v0_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert summarize_command(v0_trace, None, "json", 0) == 0
    assert json.loads(capsys.readouterr().out)["slowest"] == []


def test_malformed_count_reported_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "t.jsonl", V0_ROWS, tail='{"ts": 1.0, "probe": "del')
    assert summarize_command(path, None, "json", 5) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["malformed_lines"] == 1
    assert "skipped 1 malformed line" in captured.err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert summarize_command(missing, None, "terminal", 10) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not found" in captured.err and str(missing) in captured.err


def test_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_command(tmp_path, None, "md", 10) == 2
    assert "directory" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "\n\n", "garbage\n{\n"])
def test_no_events_exits_1(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    assert summarize_command(path, None, "json", 10) == 1
    captured = capsys.readouterr()
    assert "no events" in captured.err
    assert captured.out == ""


def test_unknown_run_id_exits_1_and_lists_runs(
    mixed_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert summarize_command(mixed_trace, "run-zzz", "md", 10) == 1
    err = capsys.readouterr().err
    assert "no events" in err and "run-zzz" in err
    assert "run-aaaa1111" in err and "run-bbbb2222" in err and ANONYMOUS_RUN in err


def test_bad_arguments_exit_2(v0_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_command(v0_trace, None, "html", 10) == 2
    assert "'html'" in capsys.readouterr().err
    assert summarize_command(v0_trace, None, "md", -1) == 2
    assert "--top" in capsys.readouterr().err


def test_reader_imports_no_heavy_library() -> None:
    code = (
        "import swayscope.trace_reader, sys; print(sorted(m for m in ('torch','transformers',"
        "'peft','opentelemetry','prometheus_client','rich','numpy') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
