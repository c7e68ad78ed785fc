"""What the sweep tests share: the checkpoint steps, the suite swept over them, and
``swayscope sweep`` run in process with its summary read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from swayscope.cli import app

#: The checkpoint steps the sweep tests train (the last one is the plan's end).
STEPS = (0, 2, 4, 6, 8)

SUITE = """\
version: 1
name: sweep-test
models:
  kind: hf
  base: {base}
  device: cpu
defaults:
  top_k: 64
suite:
  - kind: delta_kl
  - kind: perplexity_shift
    max_chunks: 2
"""


@dataclass
class Sweep:
    exit_code: int
    output: str
    out: Path
    summary: dict[str, Any]
    trace: Path

    def row(self, label: str) -> dict[str, Any]:
        return next(a for a in self.summary["adapters"] if a["label"] == label)

    def curve(self, probe: str) -> list[dict[str, Any]]:
        return next(p for p in self.summary["probes"] if p["name"] == probe)["points"]


def sweep(spec: Path, out: Path, *adapters: str) -> Sweep:
    # A disk cache of its own: the sweep's sharing is what these tests look at, not what
    # other tests on the same tiny base left on disk.
    args = ["sweep", str(spec), "--out", str(out / "o"), "--trace", str(out / "trace.jsonl"),
            "--cache-dir", str(out / "cache")]
    if adapters:
        args += ["--adapters", *adapters]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "160"})
    summary_file = out / "o" / "sweep.json"
    assert summary_file.is_file(), res.output
    return Sweep(
        res.exit_code, res.output, out / "o", json.loads(summary_file.read_text()),
        out / "trace.jsonl",
    )
