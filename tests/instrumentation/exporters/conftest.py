"""Fixtures for the exporter tests: real servers on free 127.0.0.1 ports, always stopped.

A missing server binary skips the test locally (with a message) and fails it
when ``CI`` is set: in CI the server tests must run.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from exporter_servers import (
    PrometheusServer,
    RotelAgent,
    ServerProcess,
    free_port,
    need_binary,
    ready,
    rotel_binary,
    wait_for,
)


@pytest.fixture
def servers() -> Iterator[Callable[[str, list[str], Path], ServerProcess]]:
    """Start processes (``start(name, argv, log_path)``); every one is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(name: str, argv: list[str], log: Path) -> ServerProcess:
        fh = log.open("wb")
        try:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            fh.close()
        server = ServerProcess(name, proc, log)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()

@pytest.fixture
def start_prometheus(
    servers: Callable[[str, list[str], Path], ServerProcess], tmp_path: Path
) -> Callable[[list[str]], PrometheusServer]:
    """Start a real Prometheus scraping ``targets`` (host:port) every second, tmp storage."""

    def start(targets: list[str]) -> PrometheusServer:
        binary = need_binary("prometheus")
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: swayscope\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        proc = servers(
            "prometheus",
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            tmp_path / "prometheus.log",
        )
        url = f"http://127.0.0.1:{port}"
        ready(proc, f"{url}/-/ready", 30.0)
        return PrometheusServer(url, proc)

    return start

@pytest.fixture
def pushgateway(
    servers: Callable[[str, list[str], Path], ServerProcess], tmp_path: Path
) -> str:
    """A real Pushgateway on a free port; its base URL."""
    binary = need_binary("prometheus-pushgateway")
    port = free_port()
    proc = servers(
        "pushgateway",
        # Debian's build persists to /var/lib/prometheus by default: keep ours in tmp.
        [binary, f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={tmp_path / 'pushgateway.data'}", "--log.level=warn"],
        tmp_path / "pushgateway.log",
    )
    url = f"http://127.0.0.1:{port}"
    ready(proc, f"{url}/-/ready", 20.0)
    return url

@pytest.fixture
def rotel_agent(
    servers: Callable[[str, list[str], Path], ServerProcess], tmp_path: Path
) -> RotelAgent:
    """A real rotel-agent OTLP receiver (HTTP + gRPC) that prints every span it receives."""
    binary = rotel_binary()
    http_port, grpc_port = free_port(), free_port()
    proc = servers(
        "rotel-agent",
        [
            binary, "start",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--exporter", "blackhole",
            "--debug-log", "traces",
            "--debug-log-verbosity", "detailed",
            "--batch-timeout", "100ms",
            "--pid-file", str(tmp_path / "rotel.pid"),
            "--log-file", str(tmp_path / "rotel-daemon.log"),
        ],
        tmp_path / "rotel.out",
    )

    def listening() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError("exited")
        for port in (http_port, grpc_port):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        return True

    try:
        up = wait_for(listening, 20.0)
    except AssertionError:
        up = False
    if not up:
        raise AssertionError(f"rotel-agent did not listen: {proc.output()[-2000:]}")
    return RotelAgent(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", proc)

