"""JSONL trace integrity: every line on disk as soon as its lookup returns, whole, strict JSON.

Crash safety (SIGKILL), faults (a full disk cuts a write short), a file left
without a final newline, non-regular trace paths, and values from the Python
API that JSON cannot hold. :func:`strict_lines` reads a trace back parsing
each line with ``json.loads`` refusing ``NaN``/``Infinity`` (RFC 8259 only).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from swayscope.errors import InputError, TracePathError
from swayscope.instrumentation import BackendInstrumentation, TraceWriter, _TraceEvent


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_lines(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of ``path``, parsed as strict JSON (a failure fails the test)."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"file ends in a partial line: {data[-80:]!r}"
    out = []
    for raw in data.decode("ascii").splitlines():
        if raw.strip():
            out.append(json.loads(raw, parse_constant=_no_constants))
    return out


def line_of(ev: _TraceEvent, scratch: Path) -> str:
    """The line a writer makes of ``ev`` (written to a scratch file and read back)."""
    writer = TraceWriter(scratch)
    writer.write(ev)
    writer.close()
    text = scratch.read_text(encoding="ascii")
    scratch.unlink()
    return text


def event(**overrides: Any) -> _TraceEvent:
    fields: dict[str, Any] = {
        "ts": 1700000000.5, "probe": "delta_kl", "view_id": "base",
        "prompt_hash": "0123456789ab", "top_k": 8, "op": "next_token_dist",
        "wall_ms": 1.25, "hit": False, "run_id": "r1",
    }
    fields.update(overrides)
    return _TraceEvent(**fields)


# -- disk full: a short write never leaves half a line --------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of our own, unmounted at teardown; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); "
            "test_short_write_is_rolled_back_* cover the same logic by injection"
        )
    try:
        yield mnt
    finally:
        # lazy: a file the test left open must not keep the mount alive
        subprocess.run(["umount", "--lazy", str(mnt)], check=False)


def test_disk_full_mid_trace_leaves_only_whole_lines(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real full filesystem: write until it refuses; the file holds only whole lines."""
    short_writes = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        n = real_write(fd, data)
        if n != len(data):
            short_writes.append((n, len(data)))
        return n

    monkeypatch.setattr(os, "write", spy)
    path = tiny_tmpfs / "trace.jsonl"
    writer = TraceWriter(path)
    written = failed = 0
    # 1000-byte lines straddle the 4 KiB pages, so the last one is cut short.
    while failed < 3:
        try:
            writer.write(event(error="x" * 900, wall_ms=float(written)))
            written += 1
        except TracePathError as exc:
            assert "trace.jsonl" in str(exc)
            failed += 1
    lines = strict_lines(path)
    assert [line["wall_ms"] for line in lines] == [float(i) for i in range(written)]
    assert short_writes, "the filesystem never cut a write short: the test proved nothing"
    # Space comes back: the same writer, and a next run appending, write whole lines again.
    writer.close()
    path.write_bytes(path.read_bytes()[: -4096 * 4])  # drop the tail lines, cut mid-line
    next_run = TraceWriter(path)
    next_run.write(event(run_id="next", wall_ms=-1.0))
    next_run.close()
    raw = path.read_bytes().splitlines()
    assert json.loads(raw[-1])["run_id"] == "next"


def _half_writer(real_write: Any, *, before_return: Any = None) -> Any:
    """An ``os.write`` that writes only the first half of a line, like a full disk."""

    def half(fd: int, data: bytes) -> int:
        n = real_write(fd, data[: len(data) // 2])
        if before_return is not None:
            before_return()
        return int(n)

    return half


def test_short_write_is_rolled_back_when_nothing_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trace.jsonl"
    writer = TraceWriter(path)
    writer.write(event(wall_ms=1.0))
    before = path.read_bytes()
    monkeypatch.setattr(os, "write", _half_writer(os.write))
    with pytest.raises(TracePathError, match="partial line was removed"):
        writer.write(event(wall_ms=2.0))
    assert path.read_bytes() == before
    monkeypatch.undo()
    writer.write(event(wall_ms=3.0))
    writer.close()
    assert [line["wall_ms"] for line in strict_lines(path)] == [1.0, 3.0]


def test_short_write_is_rolled_back_without_touching_a_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process appended after our fragment: its line must survive whole."""
    path = tmp_path / "trace.jsonl"
    writer = TraceWriter(path)
    writer.write(event(wall_ms=1.0))
    theirs = line_of(event(run_id="other"), tmp_path / "scratch")
    real_write = os.write

    def other_process_appends() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            real_write(fd, theirs.encode())
        finally:
            os.close(fd)

    half = _half_writer(real_write, before_return=other_process_appends)
    monkeypatch.setattr(os, "write", half)
    with pytest.raises(TracePathError):
        writer.write(event(wall_ms=2.0))
    monkeypatch.undo()
    writer.write(event(wall_ms=3.0))
    writer.close()
    lines = strict_lines(path)
    assert [line.get("run_id") for line in lines] == ["r1", "other", "r1"]
    assert [line["wall_ms"] for line in lines] == [1.0, 1.25, 3.0]


def test_failed_write_through_the_core_is_counted_and_leaves_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telemetry never takes the run down: the lookup returns, the failure is counted."""
    path = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=path)
    inst.cached("op", "base", "p0", 8, lambda: 0)
    monkeypatch.setattr(os, "write", _half_writer(os.write))
    assert inst.cached("op", "base", "p1", 8, lambda: 1) == 1
    monkeypatch.undo()
    inst.cached("op", "base", "p2", 8, lambda: 2)
    inst.close()
    assert inst.health.exporter_errors() == {"jsonl": 1}
    assert len(strict_lines(path)) == 2


# -- a file left without a final newline ----------------------------------------------------------


@pytest.mark.parametrize("via", ["writer", "core"])
def test_appending_after_a_partial_last_line_starts_a_new_line(tmp_path: Path, via: str) -> None:
    path = tmp_path / "trace.jsonl"
    complete = line_of(event(run_id="earlier"), tmp_path / "scratch")
    path.write_text(complete + complete[:40], encoding="ascii")  # a run killed mid-write
    if via == "writer":
        writer = TraceWriter(path)
        writer.write(event(run_id="next"))
        writer.close()
    else:
        inst = BackendInstrumentation(trace_path=path, run_id="next")
        inst.cached("op", "base", "p", 8, lambda: 0)
        inst.close()
    raw = path.read_text(encoding="ascii").splitlines()
    assert len(raw) == 3
    assert raw[1] == complete[:40]
    assert json.loads(raw[0])["run_id"] == "earlier"
    assert json.loads(raw[2])["run_id"] == "next"


def test_appending_to_a_complete_file_adds_no_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    for run in ("a", "b"):
        writer = TraceWriter(path)
        writer.write(event(run_id=run))
        writer.close()
    assert [line["run_id"] for line in strict_lines(path)] == ["a", "b"]
    assert b"\n\n" not in path.read_bytes()


# -- non-regular trace paths ----------------------------------------------------------------------


def _make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _make_socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path


def _make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def _link_to_fifo(path: Path) -> Path:
    path.symlink_to(_make_fifo(path.with_name("the_fifo")))
    return path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_make_fifo, "FIFO"),
        (_link_to_fifo, "FIFO"),
        (_make_socket, "socket"),
        (_make_dir, "directory"),
        (lambda _path: Path("/dev/null"), "character device"),
    ],
    ids=["fifo", "symlink-to-fifo", "socket", "directory", "char-device"],
)
def test_trace_path_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, make: Any, kind: str
) -> None:
    target = make(tmp_path / "trace.jsonl")
    outcome: list[BaseException | None] = []

    def construct() -> None:
        try:
            TraceWriter(target, source="--trace").close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=construct, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # blocked in open(2): let it through so the thread can end
        with contextlib.suppress(OSError):
            os.close(os.open(target, os.O_RDONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail(f"TraceWriter blocked opening a {kind}")
    (exc,) = outcome
    assert isinstance(exc, TracePathError), exc
    message = str(exc)
    assert kind in message and str(target) in message and "--trace" in message
    assert "regular file" in message


def test_core_refuses_a_fifo_trace_path(tmp_path: Path) -> None:
    fifo = _make_fifo(tmp_path / "trace.jsonl")
    with pytest.raises(TracePathError, match="FIFO"):
        BackendInstrumentation(trace_path=fifo)


# -- values from the Python API: strict JSON or a clear refusal ----------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"top_k": np.int64(8)}, {"top_k": 8}),
        ({"top_k": np.int32(8)}, {"top_k": 8}),
        ({"top_k": None}, {"top_k": None}),
        ({"wall_ms": math.nan}, {"wall_ms": None}),
        ({"wall_ms": math.inf}, {"wall_ms": None}),
        ({"wall_ms": np.float32(0.5)}, {"wall_ms": 0.5}),
        ({"wall_ms": 3}, {"wall_ms": 3}),
        ({"ts": -math.inf, "start_ts": math.nan}, {"ts": None, "start_ts": None}),
        ({"ts": np.float64(1.5)}, {"ts": 1.5}),
        ({"batch_size": np.uint8(4), "n_tokens": np.int16(12)}, {"batch_size": 4, "n_tokens": 12}),
        ({"batch_wall_ms": np.float64("nan")}, {"batch_wall_ms": None}),
        ({"hit": np.True_}, {"hit": True}),
        ({"view_id": np.str_("ft")}, {"view_id": "ft"}),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(v),
)
def test_python_api_values_are_written_as_strict_json(
    tmp_path: Path, overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    path = tmp_path / "trace.jsonl"
    writer = TraceWriter(path)
    writer.write(event(**overrides))
    writer.close()
    (line,) = strict_lines(path)
    for name, value in expected.items():
        assert line[name] == value and type(line[name]) is type(value), (name, line[name])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"top_k": "8"}, "top_k"),
        ({"top_k": 8.0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"wall_ms": True}, "wall_ms"),
        ({"wall_ms": "1.5"}, "wall_ms"),
        ({"batch_size": np.True_}, "batch_size"),
        ({"ts": b"1"}, "ts"),
        ({"view_id": 5}, "view_id"),
        ({"probe": ["p"]}, "probe"),
        ({"prompt_hash": None}, "prompt_hash"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(v),
)
def test_python_api_values_that_are_not_json_are_refused_and_write_nothing(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    path = tmp_path / "trace.jsonl"
    writer = TraceWriter(path)
    with pytest.raises(InputError, match=rf"'{field}'"):
        writer.write(event(**overrides))
    writer.write(event())
    writer.close()
    assert len(strict_lines(path)) == 1


@pytest.mark.parametrize("field", ["prompt", "error"])
def test_refusing_a_bad_prompt_or_error_value_does_not_echo_it(tmp_path: Path, field: str) -> None:
    writer = TraceWriter(tmp_path / "trace.jsonl")
    with pytest.raises(InputError) as info:
        writer.write(event(**{field: [b"SECRET-canary"]}))
    writer.close()
    assert "SECRET" not in str(info.value)
    assert f"'{field}'" in str(info.value) and "type list" in str(info.value)


def test_core_lookups_with_a_numpy_top_k_write_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=path)
    top_k = np.int64(8)
    inst.cached("op", "base", "a", top_k, lambda: 0)  # miss
    inst.cached("op", "base", "a", top_k, lambda: 0)  # hit
    inst.cached_batch("op", "ft", ["b", "c"], top_k, lambda idx: [0] * len(idx))
    inst.close()
    lines = strict_lines(path)
    assert [line["top_k"] for line in lines] == [8, 8, 8, 8]


def test_odd_values_encode_exactly_as_plain_ones(tmp_path: Path) -> None:
    """The checked path and the fast path agree, field for field and byte for byte."""
    path = tmp_path / "trace.jsonl"
    writer = TraceWriter(path)
    plain = event(batch_size=4, n_tokens=12, start_ts=1.5, batch_wall_ms=2.5, prompt="é\x1b\n")
    odd = event(
        top_k=np.int64(8), batch_size=np.int8(4), n_tokens=np.uint64(12),
        start_ts=np.float64(1.5), batch_wall_ms=np.float32(2.5), prompt="é\x1b\n",
    )
    writer.write(plain)
    writer.write(odd)
    writer.close()
    first, second = path.read_bytes().splitlines()
    assert first == second


# -- crash safety -------------------------------------------------------------------------------


def test_sigkilled_writer_leaves_every_line_it_wrote(tmp_path: Path) -> None:
    """A process killed without any chance to flush or close has lost nothing it looked up."""
    trace = tmp_path / "trace.jsonl"
    code = textwrap.dedent(
        f"""
        import os, signal
        from swayscope.instrumentation import BackendInstrumentation
        inst = BackendInstrumentation(trace_path={str(trace)!r})
        for i in range(25):
            inst.cached("next_token_dist", "base", f"prompt {{i}}", 8, lambda: 1.0)
        inst.cached("next_token_dist", "base", "prompt 0", 8, lambda: 1.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    lines = trace.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 26
    assert [r["hit"] for r in records] == [False] * 25 + [True]


def test_each_line_is_readable_through_a_second_handle_before_close(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=trace)
    with trace.open() as reader:
        for i in range(3):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
            assert len(reader.read().splitlines()) == 1
    inst.close()
