"""Trace reader and ``swayscope trace summarize`` logic (issue 2, point 6; hardening: issue 11)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swayscope import trace_reader
from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation
from swayscope.trace_reader import (
    ANONYMOUS_RUN,
    percentile,
    read_trace,
    render_markdown,
    summarize,
    summarize_command,
    summarize_file,
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


# -- hostile and huge trace files (issue 11) -------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def good_row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"probe": "p", "view": "base", "op": "op", "wall_ms": 1.0, "hit": False}
    base.update(kw)
    return v0_line(**base)


def test_deeply_nested_line_is_skipped_and_counted_not_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nested.jsonl"
    with path.open("w") as fh:
        fh.write(json.dumps(good_row()) + "\n")
        fh.write("[" * 100_000 + "\n")  # 2: RecursionError inside json
        fh.write('{"a":' * 50_000 + "1" + "}" * 50_000 + "\n")  # 3: nested object
        fh.write(json.dumps(good_row(wall_ms=2.0)) + "\n")
    assert summarize_command(path, None, "json", 5) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["malformed_lines"] == 2 and out["totals"]["events"] == 2
    assert "skipped 2 malformed line(s) (line 2, 3)" in captured.err
    trace = read_trace(path)
    assert trace.malformed_line_numbers == [2, 3] and len(trace.records) == 2


def test_lines_that_fail_to_parse_for_any_reason_are_skipped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(trace_reader.records, "MAX_LINE_BYTES", 4096)
    good = json.dumps(good_row())
    lines = [
        good,
        good.replace('"top_k": 256', '"top_k": ' + "9" * 5000),  # 2: int over the digit limit
        good.replace('"wall_ms": 1.0', '"wall_ms": NaN'),  # 3: not a finite duration
        good.replace('"wall_ms": 1.0', '"wall_ms": Infinity'),  # 4
        good.replace('"wall_ms": 1.0', '"wall_ms": 1' + "0" * 400),  # 5: too large for a float
        json.dumps(good_row(probe="x" * 10_000)),  # 6: over MAX_LINE_BYTES, skipped unread
        json.dumps(good_row(probe="\udcff lone surrogate")),  # 7: valid JSON, kept
        "",  # blank: ignored
        good.replace('"ts": 1700000000.0', '"ts": 1' + "0" * 400),  # 9: kept, ts dropped
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert summarize_command(path, None, "json", 10) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out, parse_constant=_no_constants)
    assert out["malformed_lines"] == 5
    assert "(line 2, 3, 4, 5, 6)" in captured.err
    assert [r["line"] for r in out["slowest"]] == [1, 7, 9]
    assert out["slowest"][2]["ts"] is None
    assert summarize_command(path, None, "terminal", 10) == 0  # the surrogate prints, escaped
    assert "\\udcff lone surrogate" in capsys.readouterr().out


def test_json_format_is_strict_json_when_totals_overflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [good_row(wall_ms=1e308), good_row(wall_ms=1e308)]
    rows[0]["ts"], rows[1]["ts"] = -1e308, 1e308  # span overflows too
    path = write(tmp_path / "t.jsonl", rows)
    assert summarize_command(path, None, "json", 2) == 0
    text = capsys.readouterr().out
    out = json.loads(text, parse_constant=_no_constants)
    assert out["totals"]["total_ms"] is None and out["totals"]["span_s"] is None
    assert out["by_probe"][0]["total_ms"] is None
    assert out["slowest"][0]["wall_ms"] == 1e308


HOSTILE = {
    "probe": "\x1b]52;c;aGVsbG8=\x07\x1b[2J\x9b31mred\u202eevil\n[fake] line",
    "view": "[/]",
    "op": "[INST] [/INST] :warning: [bold red]x",
    "run_id": "run-\x1b[5mblink",
    "error": "boom \x1b]8;;http://x\x07link\x1b]8;;\x07",
}
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def hostile_trace(tmp_path: Path) -> Path:
    row = new_line(
        HOSTILE["run_id"], probe=HOSTILE["probe"], view=HOSTILE["view"], op=HOSTILE["op"],
        wall_ms=1.0, hit=False,
    )
    row["error"] = HOSTILE["error"]
    return write(tmp_path / "hostile\x1b[31m.jsonl", [row])


@pytest.mark.parametrize("fmt", ["terminal", "md"])
def test_names_from_a_trace_reach_the_terminal_with_control_characters_escaped(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = hostile_trace(tmp_path)
    assert summarize_command(path, None, fmt, 5) == 0
    out = capsys.readouterr().out
    for raw in RAW_CONTROLS:
        assert raw not in out, (raw, out)
    assert "\\x1b]52;c;aGVsbG8=\\x07" in out.replace("\\\\", "\\")
    assert "\\u202eevil\\n[fake] line" in out.replace("\\\\", "\\")
    assert "run-\\x1b[5mblink" in out.replace("\\\\", "\\")


def test_json_format_escapes_control_characters_as_json_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert summarize_command(hostile_trace(tmp_path), None, "json", 5) == 0
    text = capsys.readouterr().out
    assert not any(raw in text for raw in RAW_CONTROLS)
    out = json.loads(text)
    assert out["by_probe"][0]["name"] == HOSTILE["probe"]  # exact, once parsed
    assert out["run_id"] == HOSTILE["run_id"]


def test_run_ids_listed_on_stderr_have_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert summarize_command(hostile_trace(tmp_path), "nope\x1b[2J", "md", 5) == 1
    err = capsys.readouterr().err
    assert not any(raw in err for raw in RAW_CONTROLS)
    assert "run-\\x1b[5mblink" in err and "nope\\x1b[2J" in err


def test_markup_and_emoji_codes_in_names_print_verbatim_and_never_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # a colour terminal: restyling would show
    names = ["[/]", "[/INST]", "[INST] hi [/INST]", "[bold red]x", "trailing\\", ":warning:"]
    rows = [good_row(probe=name) for name in names]
    assert summarize_command(write(tmp_path / "t.jsonl", rows), None, "terminal", 0) == 0
    out = capsys.readouterr().out
    for name in names:
        assert name in out, name
    assert "\u26a0" not in out  # :warning: stayed text
    assert "\x1b[1;31mx" not in out


def test_streaming_summary_equals_the_in_memory_one(mixed_trace: Path, v0_trace: Path) -> None:
    for path in (mixed_trace, v0_trace):
        for run_id in (None, "run-a", "run-bbbb2222", ANONYMOUS_RUN, "run-", "nope"):
            in_memory = summarize(read_trace(path), run_id, 3)
            scan = summarize_file(path, run_id, 3)
            if in_memory is None:
                assert scan.summary is None
            else:
                assert scan.summary is not None
                assert scan.summary.to_dict() == in_memory.to_dict()


def test_default_run_is_the_last_to_start_when_runs_interleave(tmp_path: Path) -> None:
    rows = [
        new_line("run-a", probe="p", view="base", op="op", wall_ms=1.0, hit=False),
        new_line("run-b", probe="p", view="base", op="op", wall_ms=2.0, hit=False),
        new_line("run-a", probe="p", view="base", op="op", wall_ms=3.0, hit=False),
        new_line("run-a", probe="p", view="base", op="op", wall_ms=4.0, hit=False),
    ]
    scan = summarize_file(write(tmp_path / "t.jsonl", rows))
    assert scan.summary is not None
    assert scan.summary.run_id == "run-b" and scan.summary.totals.events == 1
    assert dict(scan.summary.runs) == {"run-a": 3, "run-b": 1}


def test_forward_calls_count_interleaved_batches_once_each(tmp_path: Path) -> None:
    def miss(batch: str) -> dict[str, Any]:
        return new_line("r", probe="p", view="v", op="o", wall_ms=1.0, hit=False, batch_id=batch)

    rows = [miss("b1"), miss("b2"), miss("b1"), miss("b2"), miss("b3")]
    rows.append(new_line("r", probe="p", view="v", op="o", wall_ms=1.0, hit=False))  # v0-style
    scan = summarize_file(write(tmp_path / "t.jsonl", rows))
    assert scan.summary is not None and scan.summary.forward_calls == 4


def test_distinct_names_past_the_cap_fold_into_one_other_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = trace_reader.MAX_GROUP_KEYS + 44
    rows = [good_row(probe=f"probe-{i}", view=f"view-{i % 3}") for i in range(n)]
    path = write(tmp_path / "t.jsonl", rows)
    assert summarize_command(path, None, "json", 0) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["by_probe"]) == trace_reader.MAX_GROUP_KEYS + 1
    other = out["by_probe"][-1]
    assert other["name"] == trace_reader.OTHER and other["events"] == 44
    assert out["folded"] == {"probe": 44}
    assert sum(r["events"] for r in out["by_probe"]) == out["totals"]["events"] == n
    assert len(out["by_view"]) == 3
    assert summarize_command(path, None, "md", 0) == 0
    assert f"44 lookups of probe names past the first {n - 44}" in capsys.readouterr().out


def test_long_names_are_bounded_and_stay_distinct(tmp_path: Path) -> None:
    a, b = "a" * 5000 + "-one", "a" * 5000 + "-two"
    rows = [good_row(probe=a), good_row(probe=b), good_row(probe=a)]
    scan = summarize_file(write(tmp_path / "t.jsonl", rows), top=3)
    assert scan.summary is not None
    names = [g.name for g in scan.summary.by_probe]
    assert len(names) == 2 and names[0] != names[1]
    assert all(len(name) <= trace_reader.MAX_NAME_CHARS for name in names)
    assert [g.events for g in scan.summary.by_probe] == [2, 1]
    assert all(len(r.probe or "") <= trace_reader.MAX_NAME_CHARS for r in scan.summary.slowest)


def test_runs_past_the_cap_are_counted_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(trace_reader.summary, "MAX_RUNS", 3)
    rows = [
        new_line(f"run-{i}", probe="p", view="v", op="o", wall_ms=1.0, hit=False)
        for i in range(5)
    ]
    assert summarize_command(write(tmp_path / "t.jsonl", rows), None, "json", 0) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == "run-2"  # the last tracked run to start
    assert [r["run_id"] for r in out["runs"]] == ["run-0", "run-1", "run-2"]
    assert out["other_runs_events"] == 2


def test_large_rows_report_estimated_percentiles_within_one_percent(tmp_path: Path) -> None:
    walls = [float(w) for w in np.random.default_rng(1).lognormal(0.0, 1.5, 5000)]
    rows = [good_row(wall_ms=w, probe="big" if i % 2 else "big2") for i, w in enumerate(walls)]
    scan = summarize_file(write(tmp_path / "t.jsonl", rows), top=1)
    s = scan.summary
    assert s is not None and s.percentiles_exact is False
    for q, got in ((50, s.totals.p50_ms), (95, s.totals.p95_ms)):
        want = float(np.percentile(walls, q))
        assert abs(got - want) <= 0.01 * want, (q, got, want)
    assert s.slowest[0].wall_ms == max(walls)


def _peak_bytes_of_summarize(path: Path) -> int:
    """Peak bytes allocated by ``swayscope trace summarize --format json`` on ``path``."""
    out = io.StringIO()
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(out):
            assert summarize_command(path, None, "json", 10) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", ["one-run-unique-names", "a-run-per-line"])
def test_summarize_streams_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """Peak memory does not grow with the file: four times the lines, about the same peak."""
    # Small caps keep the files small; raising=False lets this run against a reader
    # without them (it then fails by growing, as the v0-derived reader did).
    for cap in ("MAX_GROUP_KEYS", "MAX_RUNS", "RECENT_BATCHES"):
        monkeypatch.setattr(trace_reader.summary, cap, 64, raising=False)

    def trace(n: int) -> Path:
        path = tmp_path / f"{shape}-{n}.jsonl"
        with path.open("w") as fh:
            for i in range(n):
                run = f"run-{i}" if shape == "a-run-per-line" else "run"
                row = new_line(
                    run, probe=f"probe-{i}", view=f"view-{i}", op=f"op-{i}",
                    wall_ms=float(i % 977), hit=False, batch_id=f"batch-{i}",
                )
                fh.write(json.dumps(row) + "\n")
        return path

    small, large = trace(4_000), trace(16_000)
    peak_small, peak_large = _peak_bytes_of_summarize(small), _peak_bytes_of_summarize(large)
    assert peak_large < peak_small * 1.3 + 256 * 1024, (peak_small, peak_large)
