"""The swayscope command end to end, in subprocesses: exit codes, outputs, bad input, signals;
and its help texts, as Rich renders them."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sway_testing import cli_env, popen_swayscope, swayscope, write_spec
from typer.testing import CliRunner


def read_trace(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_version(tmp_path: Path) -> None:
    out = swayscope(tmp_path, "--version")
    assert out.returncode == 0
    assert re.fullmatch(r"swayscope \d+\.\d+\.\d+\n", out.stdout)


def test_run_passes_with_report_json_and_trace(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    trace, result, md = tmp_path / "t.jsonl", tmp_path / "r.json", tmp_path / "r.md"
    out = swayscope(
        tmp_path, "run", str(spec), "--trace", str(trace), "--json", str(result),
        "--markdown", str(md),
    )
    assert out.returncode == 0, out.stderr
    assert "5 pass" in out.stdout and "forward calls:" in out.stdout
    assert f"JSONL trace: {trace}" in out.stdout
    data = json.loads(result.read_text())
    assert data["status"] == "complete" and data["exit_code"] == 0
    assert [p["verdict"] for p in data["probes"]] == ["pass"] * 5
    stats = data["backend_stats"]
    lines = read_trace(trace)
    assert len(lines) == stats["cache_hits"] + stats["cache_misses"]
    assert sum(1 for rec in lines if rec["hit"]) == stats["cache_hits"]
    assert {rec["run_id"] for rec in lines} == {data["run_id"]}
    assert "| delta_kl |" in md.read_text()


def test_a_failing_probe_exits_1(tmp_path: Path) -> None:
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path, strength=0.0)))
    assert out.returncode == 1, out.stderr
    assert "fail" in out.stdout


@pytest.mark.parametrize(
    ("spec_text", "fragments"),
    [
        ("version: 1\nsuite: [\n", ["suite.yaml", "not valid YAML"]),
        ("version: 1\nsuite:\n  - kind: warp\n", ["suite.yaml:3", "'warp'", "delta_kl"]),
        (
            "version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n    prompts: []\n",
            ["suite.yaml:6", "suite.0.prompts", "[]"],
        ),
        (
            "version: 1\nmodels:\n  kind: hf\n  base: /no/such/base\n  adapter: /no/such/ad\n"
            "suite:\n  - kind: delta_kl\n",
            ["suite.yaml", "models.base", "/no/such/base", "does not exist"],
        ),
    ],
)
def test_bad_input_exits_2_naming_file_key_value_and_leaves_nothing(
    tmp_path: Path, spec_text: str, fragments: list[str]
) -> None:
    spec = tmp_path / "suite.yaml"
    spec.write_text(spec_text)
    trace, result = tmp_path / "t.jsonl", tmp_path / "r.json"
    out = swayscope(tmp_path, "run", str(spec), "--trace", str(trace), "--json", str(result))
    assert out.returncode == 2
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)
    assert "Traceback" not in out.stderr
    assert not trace.exists() and not result.exists()


def test_missing_spec_file_exits_2(tmp_path: Path) -> None:
    out = swayscope(tmp_path, "run", str(tmp_path / "absent.yaml"))
    assert out.returncode == 2 and "absent.yaml" in out.stderr and "does not exist" in out.stderr


def test_bad_endpoint_and_busy_port_fail_before_any_forward_pass(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    trace = tmp_path / "t.jsonl"
    out = swayscope(tmp_path, "run", str(spec), "--otlp-endpoint", "http://[::bad", "--trace",
                    str(trace))
    assert out.returncode == 2 and "--otlp-endpoint" in out.stderr and "[::bad" in out.stderr
    assert not trace.exists()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = swayscope(tmp_path, "run", str(spec), "--metrics-port", str(port))
    assert out.returncode == 2 and "--metrics-port" in out.stderr and str(port) in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_valid_partial_results_and_a_complete_trace(
    tmp_path: Path, sig: signal.Signals
) -> None:
    spec = write_spec(tmp_path, latency=15.0)
    trace, result = tmp_path / "t.jsonl", tmp_path / "r.json"
    proc = popen_swayscope(
        tmp_path, "run", str(spec), "--trace", str(trace), "--json", str(result)
    )
    deadline = time.monotonic() + 60
    # Wait until the first probe (null_adapter) has finished and the second has started.
    while time.monotonic() < deadline:
        if trace.exists() and any(
            rec.get("probe") == "delta_kl" for rec in read_trace(trace)
        ):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never reached the second probe")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    data = json.loads(result.read_text())
    assert data["status"] == "interrupted"
    assert data["probes"][0]["name"] == "null_adapter"
    assert len(data["probes"]) + len(data["not_run"]) == 5 and data["not_run"]
    lines = read_trace(trace)  # every line parses: nothing half-written
    assert lines and all(rec["schema"] == 1 for rec in lines)
    assert "interrupted" in stdout


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_demo_end_to_end(tmp_path: Path) -> None:
    """The main job: builds the tiny model, runs all five probes, telemetry on."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swayscope", "demo", "--metrics-linger", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    out_lines: list[str] = []
    url = None
    for line in proc.stdout:
        out_lines.append(line)
        if line.startswith("metrics stay up"):
            break
        if line.startswith("metrics: "):
            url = line.split()[3]  # "metrics: served at URL during the run"
    assert url is not None, "".join(out_lines)
    metrics = _scrape(url)
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    report = "".join(out_lines)
    assert "5 pass" in report, report + stderr
    home = tmp_path / "home"
    result = json.loads((home / "demo" / "result.json").read_text())
    assert result["status"] == "complete" and result["exit_code"] == 0
    stats = result["backend_stats"]
    lines = read_trace(home / "demo" / "trace.jsonl")
    assert len(lines) == stats["cache_hits"] + stats["cache_misses"]
    assert {rec["probe"] for rec in lines} >= {"delta_kl", "adapter_ablation", "perplexity_shift"}
    assert _metric_sum(metrics, "swayscope_cache_hits_total") == stats["cache_hits"]
    assert _metric_sum(metrics, "swayscope_cache_misses_total") == stats["cache_misses"]
    assert _metric_sum(metrics, "swayscope_forward_calls_total") == stats["forward_calls"]
    assert _metric_sum(metrics, 'swayscope_probes_total') == 5
    assert time.monotonic() - started < 120


def test_collector_down_does_not_stop_the_run_and_drops_are_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # closed again when the block ends: nobody listens
    spec = write_spec(tmp_path)
    result = tmp_path / "r.json"
    out = swayscope(
        tmp_path, "run", str(spec), "--otlp-endpoint", f"http://127.0.0.1:{closed}",
        "--json", str(result),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(result.read_text())
    assert data["telemetry"]["otlp_endpoint"].startswith(f"http://127.0.0.1:{closed}")
    assert re.fullmatch(r"[0-9a-f]{32}", data["telemetry"]["trace_id"])
    assert data["telemetry"]["spans_dropped"] > 0
    assert "spans dropped" in out.stdout


def test_threads_flag_is_checked_before_anything_runs(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    bad = swayscope(tmp_path, "run", str(spec), "--threads", "0", "--json", "r.json")
    assert bad.returncode == 2 and "--threads" in bad.stderr and "got 0" in bad.stderr
    assert not (tmp_path / "r.json").exists()
    ok = swayscope(tmp_path, "run", str(spec), "--threads", "1", "--json", "r.json")
    assert ok.returncode == 0, ok.stderr
    assert "threads" in json.loads((tmp_path / "r.json").read_text())


def _commands(command: Any, path: str = "swayscope") -> list[tuple[str, Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, f"{path} {name}")
    return found


def test_help_texts_survive_rich_markup() -> None:
    """Typer renders help through Rich, which drops ``[word ...]`` as a markup tag: a
    default shown as ``[models.workers.count or 2]`` vanished from ``--help``."""
    import typer.main

    from swayscope.cli import app

    tag = re.compile(r"(?<!\\)\[[A-Za-z/@#]")
    eaten = []
    for path, command in _commands(typer.main.get_command(app)):
        texts = [(path, command.help)] + [
            (f"{path} {p.opts[0] if p.opts else p.name}", getattr(p, "help", None))
            for p in command.params
        ]
        eaten += [f"{where}: {text!r}" for where, text in texts if text and tag.search(text)]
    assert not eaten, "\n".join(eaten)
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300"})
    assert "Workers in the pool (default: models.workers.count, else 2)." in result.output
