"""Prompt text never leaves the process unless captured (issue 11).

Canary prompts, built to trip every error path a prompt can reach (too long for the
model, failing inside a model call with a message that quotes the input), go through
a real run; every output of that run is then searched for them: spans at a real OTLP
receiver, the metrics endpoint, the JSONL trace, the result JSON, the markdown
report, the terminal and the logs at INFO and above.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from exporter_servers import RotelAgent, ServerProcess, wait_for
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sway_testing import cli_env

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.jsonl import TraceWriter
from swayscope.instrumentation.exporters.otel import OtelExporter

CANARY = "CANARY-7f3a"


def _canary_spec(base: Path, adapter: Path) -> str:
    too_long = f"{CANARY} " + "word " * 3000  # more tokens than the tiny model's context
    return f"""\
version: 1
name: canary
models:
  kind: hf
  base: {base}
  adapter: {adapter}
suite:
  - kind: null_adapter
  - kind: delta_kl
    prompts: ["{CANARY} one: the patient's diagnosis", "{too_long}"]
  - kind: adapter_ablation
    prompts: ["{CANARY} two: my PIN is 4711"]
  - kind: prompt_collapse
    prompts: ["{CANARY} three: a private note"]
  - kind: perplexity_shift
    text: "{CANARY} four. A private letter, sentence one. Another private sentence two."
"""


def test_no_output_of_a_run_contains_prompt_text(
    tmp_path: Path,
    rotel_agent: RotelAgent,
    servers: Callable[[str, list[str], Path], ServerProcess],
) -> None:
    pytest.importorskip("transformers")
    from swayscope.backends.tiny import build_tiny

    paths = build_tiny(tmp_path / "tiny", seed=0)
    spec = tmp_path / "canary.yaml"
    spec.write_text(_canary_spec(paths.base_dir, paths.adapter_dir))
    trace, result, md = tmp_path / "t.jsonl", tmp_path / "r.json", tmp_path / "r.md"
    proc = subprocess.Popen(
        [sys.executable, "-m", "swayscope", "run", str(spec), "--trace", str(trace),
         "--json", str(result), "--markdown", str(md), "--metrics-port", "0",
         "--metrics-linger", "30", "--otlp-endpoint", rotel_agent.http_endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    stdout_lines: list[str] = []
    metrics = ""
    for line in proc.stdout:
        stdout_lines.append(line)
        if line.startswith("metrics: "):
            url = line.split()[3]  # "metrics: served at URL during the run"
            with urllib.request.urlopen(url, timeout=10) as resp:  # the final values
                metrics = resp.read().decode()
    _, stderr = proc.communicate(timeout=120)
    stdout = "".join(stdout_lines)
    assert proc.returncode == 1, stdout + stderr  # delta_kl errored on the long prompt
    data = json.loads(result.read_text())
    errors = [p["error"] for p in data["probes"] if p["error"]]
    assert errors and all("prompt hash" in e for e in errors), errors
    assert wait_for(lambda: any(s.name == "swayscope.run" for s in rotel_agent.spans()), 30)
    spans_text = rotel_agent.process.output()
    assert "exception" in spans_text  # the error path really reached the spans
    assert metrics and trace.read_text()
    for name, text in {
        "spans": spans_text, "metrics": metrics, "JSONL": trace.read_text(),
        "result JSON": result.read_text(), "markdown": md.read_text(),
        "terminal": stdout, "logs": stderr,
    }.items():
        assert CANARY not in text, f"prompt text in the {name}"


def test_a_library_error_quoting_its_input_is_redacted_in_every_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model call whose exception quotes the prompt (whole or cut short, as tokenizers
    and models do): the events, spans and trace lines carry ``<prompt HASH>`` instead."""
    memory = InMemorySpanExporter()
    otel = OtelExporter(span_exporter=memory, batch=False)
    inst = BackendInstrumentation(exporters=[otel, TraceWriter(tmp_path / "t.jsonl")])
    secret = f"{CANARY} the patient's full diagnosis and history"

    def failing(indices: list[int]) -> list[object]:
        raise ValueError(f"cannot encode {secret!r} (…{secret[-20:]})")

    with caplog.at_level(logging.DEBUG), inst.run(suite="s"), inst.probe("p") as probe:
        with pytest.raises(ValueError):
            inst.cached_batch("next_token_dist", "base", [secret, "fine"], 8, failing)
        probe.error = inst.redact("ValueError: " + repr(secret))
        probe.status = "error"
    inst.close()
    outputs = {
        "trace": (tmp_path / "t.jsonl").read_text(),
        "spans": repr([(s.attributes, s.events, s.status) for s in memory.get_finished_spans()]),
        "logs": caplog.text,
    }
    for name, text in outputs.items():
        assert CANARY not in text, f"prompt text in the {name}"
    assert f"<prompt {inst.hash_prompt(secret)}>" in outputs["trace"]
