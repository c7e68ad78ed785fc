"""Live: the final values of a run reach every scraper, not only the first one.

A ``swayscope run`` (dummy backend, a few seconds; spans sent to a dead collector,
pushes to a dead Pushgateway) serves its metrics to two real Prometheus servers (an HA
pair: one address, one User-Agent, 1 s interval, each its own scrape offset, the
shipped rules) and to a third scraper hitting /metrics in a loop (a curl). At the end
of the run the endpoint serves the final values long enough for all three to scrape
them; each Prometheus' last samples then equal the result JSON's totals, the spans
dropped at the final flush and the failed last push included, and neither sees a
stall after the normal end.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import ops_servers as srv
import pytest
from sway_testing import cli_env, write_spec

pytestmark = pytest.mark.server

LINGER_S = 20.0


def _loop_scrape(url: str, stop: threading.Event, out: list[tuple[float, str]]) -> None:
    """Scrape every 50 ms (as curl does: no OpenMetrics) until the endpoint goes away."""
    req = urllib.request.Request(url, headers={"User-Agent": "curl/8.0"})
    while not stop.is_set():
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                out.append((time.monotonic(), resp.read().decode()))
        except (OSError, http.client.HTTPException):
            if out:
                return  # it served, and now it is gone (or went mid-response)
        time.sleep(0.05)


def _value(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def test_two_prometheus_and_a_curl_loop_all_get_the_final_values(tmp_path: Path) -> None:
    procs = srv.Processes()
    port = srv.free_port()
    stop = threading.Event()
    scrapes: list[tuple[float, str]] = []
    loop = threading.Thread(
        target=_loop_scrape, args=(f"http://127.0.0.1:{port}/metrics", stop, scrapes)
    )
    try:
        pair = [
            srv.start_prometheus(procs, tmp_path, targets=[f"127.0.0.1:{port}"],
                                 external_labels={"replica": replica})
            for replica in ("a", "b")
        ]
        result_path = tmp_path / "result.json"
        with socket.socket() as s, socket.socket() as s2:
            s.bind(("127.0.0.1", 0))
            s2.bind(("127.0.0.1", 0))
            # closed again at once: nothing listens there
            dead, dead_gateway = s.getsockname()[1], s2.getsockname()[1]
        proc = procs.start(
            [sys.executable, "-m", "swayscope", "run", str(write_spec(tmp_path, latency=15)),
             "--metrics-port", str(port), "--metrics-linger", str(LINGER_S),
             "--metrics-wait", "30",
             "--otlp-endpoint", f"http://127.0.0.1:{dead}",
             "--pushgateway", f"http://127.0.0.1:{dead_gateway}", "--json", str(result_path)],
            tmp_path / "cli.log", env=cli_env(tmp_path), stdout=subprocess.PIPE,
        )
        # The run starts once Prometheus has scraped it (--metrics-wait); the loop joins then.
        for prometheus in pair:
            srv.wait_until(
                lambda p=prometheus: p.scalar(f'up{{instance="127.0.0.1:{port}"}}') == 1, 30,
                "both Prometheus to scrape the run",
            )
        loop.start()
        assert proc.stdout is not None
        lingering_at = None
        for raw in proc.stdout:
            if raw.startswith(b"metrics stay up"):
                lingering_at = time.monotonic()
        assert proc.wait(60) == 0, (tmp_path / "cli.log").read_text()
        ended = time.monotonic()
        assert lingering_at is not None
        # Both scrapers had the final values well before the linger ran out.
        assert ended - lingering_at < LINGER_S / 2, ended - lingering_at
        loop.join(10)

        data = json.loads(result_path.read_text())
        totals = {
            "swayscope_cache_hits_total": data["backend_stats"]["cache_hits"],
            "swayscope_cache_misses_total": data["backend_stats"]["cache_misses"],
            "swayscope_forward_calls_total": data["backend_stats"]["forward_calls"],
            "swayscope_probes_total": len(data["probes"]),
            "swayscope_spans_dropped_total": data["telemetry"]["spans_dropped"],
        }
        assert totals["swayscope_forward_calls_total"] > 0
        # Every span was dropped, counted before the result was taken: run, probes,
        # views, forward calls (at least one span each).
        assert totals["swayscope_spans_dropped_total"] > 1 + 5 + totals[
            "swayscope_forward_calls_total"]
        # Every push failed, the last one (after the run) included.
        pushes = data["telemetry"]["exporter_errors"]["pushgateway"]
        assert pushes >= 2  # at least the push at the run's end and the final one
        # Every scrape of the loop during the linger saw the final state.
        during = [text for at, text in scrapes if at >= lingering_at]
        assert during, "the second scraper got nothing during the linger"
        for text in during:
            assert _value(text, "swayscope_run_active") == 0
            for name, total in totals.items():
                assert _value(text, name) == total, name
        # And so did each Prometheus, though the loop scraped far more often and the two
        # look alike to the endpoint.
        for prometheus in pair:
            def last(name: str, p: srv.Prometheus = prometheus) -> float | None:
                return p.scalar(f"sum(last_over_time({name}[1m]))")

            assert last("swayscope_run_active") == 0, prometheus.query("up[1m]")
            for name, total in totals.items():
                assert last(name) == total, name
            assert prometheus.scalar(
                'last_over_time(swayscope_exporter_errors_total{exporter="pushgateway"}[1m])'
            ) == pushes
        # The target is gone now; neither sees a stall (reason 2: vanished while active).
        srv.wait_until(
            lambda: all(p.scalar(f'up{{instance="127.0.0.1:{port}"}}') == 0 for p in pair), 10,
            "both Prometheus to see the target gone",
        )
        time.sleep(2.0)  # two more rule evaluations
        for prometheus in pair:
            stall = prometheus.scalar(
                f'max_over_time(swayscope:run_stall_reason{{instance="127.0.0.1:{port}"}}[1m])'
            )
            assert stall in (0, None), stall
    finally:
        stop.set()
        procs.stop_all()
        if loop.is_alive():
            loop.join(10)
