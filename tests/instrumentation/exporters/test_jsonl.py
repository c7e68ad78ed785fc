"""JSONL trace: every line is on disk as soon as its lookup returns (crash safety)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


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
    from swayscope.instrumentation import BackendInstrumentation

    trace = tmp_path / "trace.jsonl"
    inst = BackendInstrumentation(trace_path=trace)
    with trace.open() as reader:
        for i in range(3):
            inst.cached("next_token_dist", "ft", f"p{i}", 8, lambda: 1.0)
            assert len(reader.read().splitlines()) == 1
    inst.close()
