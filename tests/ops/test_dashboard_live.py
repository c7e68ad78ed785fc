"""Live check of the operations kit: a real Prometheus, loaded with our rules, scrapes a
real suite run (the demo suite on the tiny model); every PromQL expression of the
Grafana dashboard returns data, and the hit-ratio recording rule equals the run's
BackendStats.hit_rate.

Locally a missing ``prometheus`` binary skips with a message; with ``CI`` set it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dashboard_queries as dq
import pytest

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "dashboards" / "prometheus" / "rules" / "swayscope.rules.yml"




def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=5) as resp:
            data = json.loads(resp.read())
        assert data["status"] == "success", data
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[int], Prom]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> Prom:
        binary = _prometheus_binary()
        port = _free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {json.dumps(str(RULES))}\n"
            "scrape_configs:\n  - job_name: swayscope\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        )
        log.close()
        prom = Prom(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

        _wait(ready, 30, "Prometheus to become ready")
        return prom

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_dashboard_query_returns_data_and_the_recording_rule_equals_the_hit_rate(
    tmp_path: Path, prometheus_for: Callable[[int], Prom]
) -> None:
    pytest.importorskip("transformers")
    from swayscope.backends.tiny import build_tiny
    from swayscope.instrumentation import BackendInstrumentation
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
    from swayscope.suite.demo import demo_suite_yaml
    from swayscope.suite.runner import build_backend, run_suite
    from swayscope.suite.spec import load_suite_text

    paths = build_tiny(tmp_path / "tiny", seed=0)
    loaded = load_suite_text(demo_suite_yaml(paths.base_dir, paths.adapter_dir), "demo")
    exporter = PrometheusExporter(port=0, first_scrape_wait_s=30.0)
    assert exporter.port is not None
    prom = prometheus_for(exporter.port)
    inst = BackendInstrumentation(exporters=[exporter])
    try:
        backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
        result = run_suite(loaded, backend, live_progress=False)
        assert result.status == "complete", result.to_dict()
        stats = inst.stats

        # Prometheus has scraped the final values once run_active is back to 0 and the
        # forward-call total matches.
        def final_scrape() -> bool:
            calls = prom.scalar('sum(swayscope_forward_calls_total{job="swayscope"})')
            return prom.scalar("swayscope_run_active") == 0 and calls == stats.forward_calls

        _wait(final_scrape, 30, "Prometheus to scrape the run's final values")

        # The recording rule, evaluated after that scrape, equals the run's hit rate:
        # every series started at 0 (zeroed at run start, scraped before traffic).
        def rule_settled() -> float | None:
            value = prom.scalar("swayscope:cache_hit_ratio:rate5m")
            ok = value is not None and abs(value - stats.hit_rate) < 1e-9
            return value if ok else None

        try:
            _wait(rule_settled, 15, "the recording rule to equal the hit rate")
        except AssertionError:
            pytest.fail(
                f"swayscope:cache_hit_ratio:rate5m = "
                f"{prom.scalar('swayscope:cache_hit_ratio:rate5m')}, "
                f"BackendStats.hit_rate = {stats.hit_rate}"
            )
        assert 0 < stats.hit_rate < 1

        # Every dashboard expression returns data: with match-all variables and with
        # the run's own run_id selected.
        for values in (None, {"job": "swayscope", "run_id": result.run_id}):
            empty = [
                f"{title} [{ref}]: {expr}"
                for title, ref, expr in dq.dashboard_exprs_by_panel(values=values)
                if not prom.query(expr)
            ]
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        # Latency panels show exemplars that carry a trace id only when OTel is on;
        # here the exemplar storage answers, and the bucket series exist.
        assert prom.query("swayscope_forward_duration_seconds_bucket")
        # The run_id template variable resolves to this run.
        ids = prom.get("/api/v1/label/run_id/values")
        assert result.run_id in ids
    finally:
        inst.close()
