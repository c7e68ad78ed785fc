"""Against the real dlm-sway 0.1.0 (its own venv): its instrumentation tests, and ``sway run``
opted in — spans at a real OTLP receiver, live metrics, JSONL, and the same probes as
``swayscope run`` on the same file. Skipped locally without dlm-sway (with the reason),
failed in CI."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from dlm_sway_testing import (
    SWAYSCOPE_KINDS,
    VERDICTS,
    dlm_sway_sdist_tests,
    subprocess_env,
    swayscope_cmd,
)
from exporter_servers import RotelAgent, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from swayscope.integrations.dlm_sway.launcher import child_environment, prepare_hook_dir

#: The instrumentation test files of dlm-sway 0.1.0's sdist, and how many tests they hold.
SWAY_INSTRUMENTATION_TESTS = (
    "tests/unit/test_backend_instrumentation.py",
    "tests/unit/test_runner_backend_stats.py",
)
SWAY_INSTRUMENTATION_TEST_COUNT = 21


def test_dlm_sways_own_instrumentation_tests_pass_against_swayscope(
    sway_venv: Path, tmp_path: Path
) -> None:
    venv = sway_venv
    tests = dlm_sway_sdist_tests(venv)
    hook = tmp_path / "hook"
    hook.mkdir()
    prepare_hook_dir(hook)
    env = child_environment(hook, {}, {}, subprocess_env(tmp_path))
    python = str(venv / "bin" / "python")
    which = subprocess.run(
        [python, "-c", "import dlm_sway.backends._instrumentation as m; "
         "print(m.BackendInstrumentation.__module__, m.ForwardCache.__module__)"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert which.stdout.split() == [
        "swayscope.integrations.dlm_sway.shim", "swayscope.instrumentation.cache",
    ], which.stderr
    out = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SWAY_INSTRUMENTATION_TESTS],
        capture_output=True, text=True, env=env, cwd=tests.parent, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"{SWAY_INSTRUMENTATION_TEST_COUNT} passed" in out.stdout, out.stdout[-2000:]


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return str(resp.read().decode("utf-8"))
    except OSError:
        return None


def _samples(body: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    ]


def test_sway_run_opted_in_exports_spans_metrics_and_jsonl(
    sway_venv: Path,
    tmp_path: Path,
    sway_suite: Path,
    swayscope_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
    rotel_agent: RotelAgent,
) -> None:
    venv, spec = sway_venv, sway_suite
    port = free_port()
    trace, sway_trace, result = tmp_path / "t.jsonl", tmp_path / "sway.jsonl", tmp_path / "r.json"
    cmd = swayscope_cmd(
        "sway", "--sway", str(venv / "bin" / "sway"), "--otlp-endpoint",
        rotel_agent.http_endpoint, "--metrics-port", str(port), "--metrics-linger", "60",
        "--trace", str(trace), "--", "run", str(spec), "--json", str(result),
        "--trace", str(sway_trace),
    )
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=subprocess_env(tmp_path),
                                cwd=tmp_path)
        last = ""
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            # Scrape until sway exits: at exit it waits (linger) for one scrape of final values.
            body = _scrape(f"http://127.0.0.1:{port}/metrics")
            last = body or last
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(10)
    stderr = (tmp_path / "err.txt").read_text()
    assert code == 0, stderr[-3000:]
    theirs = json.loads(result.read_text())
    verdicts = {p["name"]: p["verdict"] for p in theirs["probes"]}
    stats = theirs["backend_stats"]
    # The same probes as swayscope's run of the same file, each with a verdict of the same kind.
    ours = swayscope_run[1]["probes"]
    assert list(verdicts) == [p["name"] for p in ours] == list(SWAYSCOPE_KINDS)
    assert [p["kind"] for p in theirs["probes"]] == [
        "external_perplexity" if p["kind"] == "perplexity_shift" else p["kind"] for p in ours
    ]
    assert set(verdicts.values()) | {p["verdict"] for p in ours} <= VERDICTS
    run_id = re.search(r"telemetry of this sway run \(run (\w+)\)", stderr).group(1)  # type: ignore[union-attr]

    # JSONL: ours (--trace of swayscope sway) and dlm-sway's own --trace, both swayscope lines.
    for path in (trace, sway_trace):
        lines = [json.loads(ln) for ln in path.read_text().splitlines()]
        assert len(lines) == stats["cache_hits"] + stats["cache_misses"]
        assert sum(ln["hit"] for ln in lines) == stats["cache_hits"]
        assert {ln["run_id"] for ln in lines} == {run_id}
        assert {ln["probe"] for ln in lines} - {None} == set(verdicts)

    # Metrics: the last scrape, after the run, holds its final values.
    samples = _samples(last)
    def total(name: str, **labels: str) -> float:
        return sum(v for n, lab, v in samples
                   if n == name and all(lab.get(k) == x for k, x in labels.items()))
    assert total("swayscope_cache_hits_total") == stats["cache_hits"]
    assert total("swayscope_cache_misses_total") == stats["cache_misses"]
    assert total("swayscope_forward_calls_total") == stats["forward_calls"] > 0
    for status in set(verdicts.values()):
        assert total("swayscope_probes_total", status=status) == sum(
            v == status for v in verdicts.values()
        )
    assert {lab["probe"] for n, lab, _ in samples
            if n == "swayscope_probe_duration_seconds"} == set(verdicts)

    # Spans, at the real receiver: the run; probes (dlm-sway's verdicts) → forward calls.
    def complete() -> list[object]:
        spans = rotel_agent.spans()
        forward = sum(s.name == "swayscope.forward" for s in spans)
        done = any(s.name == "swayscope.run" for s in spans)
        return spans if done and forward == stats["forward_calls"] else []

    spans = wait_for(complete, 30.0)
    assert spans, rotel_agent.process.output()[-3000:]
    runs = [s for s in spans if s.name == "swayscope.run"]
    assert len(runs) == 1 and runs[0].attributes["swayscope.run_id"] == run_id
    probes = {s.attributes["swayscope.probe"]: s for s in spans if s.name == "swayscope.probe"}
    assert {p: s.attributes["swayscope.probe.status"] for p, s in probes.items()} == verdicts
    forwards = [s for s in spans if s.name == "swayscope.forward"]
    assert {s.attributes["swayscope.view_id"] for s in forwards} >= {"base", "ft"}
    # In a probe's trace, or (dlm-sway's preflight, before any probe) a trace of its own,
    # linked to the run's and carrying its run id.
    # (every chunk of a probe: a slow probe goes on in a new trace every 10 s)
    probe_traces = {s.trace_id for s in spans if s.name == "swayscope.probe"}
    for s in forwards:
        assert s.trace_id in probe_traces or (
            s.parent_id == "" and s.attributes["swayscope.run_id"] == run_id
            and [link.span_id for link in s.links] == [runs[0].span_id]
        ), s
