"""Real servers for the live ops tests: Prometheus, Alertmanager, Pushgateway on free
127.0.0.1 ports, each stopped by the PID it was started with.

A missing binary skips the test locally (with a message) and fails it when ``CI`` is set.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sway_testing import missing

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "dashboards" / "prometheus" / "rules" / "swayscope.rules.yml"
ALERTMANAGER_CONFIG = REPO / "dashboards" / "alertmanager" / "alertmanager.yml"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(
            f"{name} is not installed (a Debian package; .ci/run installs it)",
            "the live ops tests",
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll ``pred`` until it returns something truthy; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = pred()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@dataclass
class Processes:
    """Processes a test started; :meth:`stop_all` ends each one by its own PID."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
              stdout: int | None = None) -> subprocess.Popen[bytes]:
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, stdout=stdout if stdout is not None else fh,
                stderr=fh if stdout is not None else subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env,
            )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None and _stopped(proc.pid):
                proc.kill()
            elif proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _stopped(pid: int) -> bool:
    """A SIGSTOPped process ignores SIGTERM until continued."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def ready(url: str, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    def ok() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)

    wait_until(ok, 30, f"{what} at {url}")


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        data = get_json(f"{self.url}/api/v1/query?{q}")
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def label_values(self, label: str) -> list[str]:
        data = get_json(f"{self.url}/api/v1/label/{label}/values")
        assert data["status"] == "success", data
        return list(data["data"])


@dataclass
class Alertmanager:
    url: str

    def active(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds as active now (resolved ones excluded)."""
        alerts = get_json(f"{self.url}/api/v2/alerts")
        return [a for a in alerts if a["status"]["state"] != "resolved"]


class OtlpSink:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that takes every export (200, an empty
    ExportTraceServiceResponse): a collector that delivers. Counts the exports."""

    def __init__(self) -> None:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()
                sink.exports += 1

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.exports = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_alertmanager(procs: Processes, tmp: Path) -> Alertmanager:
    """A real Alertmanager with the shipped configuration."""
    port = free_port()
    log = tmp / "alertmanager.log"
    proc = procs.start(
        [binary("prometheus-alertmanager"), f"--config.file={ALERTMANAGER_CONFIG}",
         f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address=", "--log.level=warn"],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    ready(f"{url}/-/ready", proc, "alertmanager", log)
    return Alertmanager(url)


def start_pushgateway(procs: Processes, tmp: Path) -> str:
    port = free_port()
    log = tmp / "pushgateway.log"
    proc = procs.start(
        # Debian's build persists to /var/lib/prometheus by default: keep ours in tmp.
        [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={tmp / 'pushgateway.data'}", "--log.level=warn"],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    ready(f"{url}/-/ready", proc, "pushgateway", log)
    return url


def start_prometheus(
    procs: Processes,
    tmp: Path,
    *,
    targets: list[str],
    rules: Path = RULES,
    pushgateway: str | None = None,
    alertmanager: Alertmanager | None = None,
    external_labels: dict[str, str] | None = None,
    scrape_s: float = 1.0,
    evaluate_s: float = 1.0,
) -> Prometheus:
    """A real Prometheus scraping ``targets`` (job swayscope) every ``scrape_s`` and the
    Pushgateway (job pushgateway, honor_labels) every second, evaluating ``rules`` every
    ``evaluate_s``. ``external_labels`` set its identity (two servers of an HA pair differ
    in them, and so in when each scrapes a target)."""
    port = free_port()
    scrape = [{
        "job_name": "swayscope", "scrape_interval": f"{scrape_s:g}s",
        "scrape_timeout": f"{round(scrape_s * 800)}ms", "static_configs": [{"targets": targets}],
    }]
    if pushgateway is not None:
        scrape.append({
            "job_name": "pushgateway", "honor_labels": True, "scrape_interval": "1s",
            "scrape_timeout": "800ms",
            "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}],
        })
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": f"{evaluate_s:g}s",
                   "external_labels": external_labels or {}},
        "rule_files": [str(rules)],
        "scrape_configs": scrape,
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.url.removeprefix("http://")]}
        ]}]}
    name = "prometheus" + "".join(f"-{v}" for v in (external_labels or {}).values())
    cfg = tmp / f"{name}.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    log = tmp / f"{name}.log"
    proc = procs.start(
        [binary("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={tmp / name}",
         f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
         "--log.level=warn"],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    ready(f"{url}/-/ready", proc, "prometheus", log)
    return Prometheus(url)
