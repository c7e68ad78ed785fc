"""Telemetry across processes: the workers' spans (queue wait, compute) arrive at a real OTLP
receiver (rotel-agent) as children of the driver's forward spans, through the W3C
traceparent each part carries; with the span ids the workers chose."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ray_testing import dashboard_queries, exporter_servers
from sway_testing import Recorder
from test_ray_pool import PROMPTS, TOP_K, pool_backend

from swayscope.instrumentation import BackendInstrumentation, ForwardCall, WorkerCallEnded
from swayscope.instrumentation.tracecontext import TraceParent, parse_traceparent

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def rotel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real rotel-agent OTLP receiver that prints every span it receives."""
    srv = exporter_servers()
    tmp: Path = tmp_path_factory.mktemp("rotel")
    http_port, grpc_port = srv.free_port(), srv.free_port()
    argv = [
        srv.rotel_binary(), "start",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--exporter", "blackhole", "--debug-log", "traces",
        "--debug-log-verbosity", "detailed", "--batch-timeout", "100ms",
        "--pid-file", str(tmp / "rotel.pid"), "--log-file", str(tmp / "rotel-daemon.log"),
    ]
    log = tmp / "rotel.out"
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = srv.ServerProcess("rotel-agent", proc, log)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"rotel-agent exited: {server.output()[-2000:]}")
            with socket.create_connection(("127.0.0.1", http_port), timeout=0.5):
                return True

        assert srv.wait_for(listening, 20.0), server.output()[-2000:]
        yield srv.RotelAgent(f"http://127.0.0.1:{http_port}",
                             f"http://127.0.0.1:{grpc_port}", server)
    finally:
        server.stop()


def test_traceparent_round_trip() -> None:
    parent = TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parent.header == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(parent.header) == parent
    assert parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00") == (
        TraceParent(parent.trace_id, parent.span_id, sampled=False)
    )
    for bad in (None, "", "01-x", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"):
        assert parse_traceparent(bad) is None


@dataclass
class PoolRun:
    """A traced, scraped run on two workers: its events, its run id, the servers."""

    events: list[Any]
    run_id: str
    rotel: Any
    prometheus: Any


def start_prometheus(tmp: Path, target: str) -> Any:
    """A real Prometheus scraping ``target`` every second (stopped by the caller)."""
    srv = exporter_servers()
    port = srv.free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: swayscope\n"
        f"    static_configs:\n      - targets: [{json.dumps(target)}]\n"
    )
    log = tmp / "prometheus.log"
    argv = [srv.need_binary("prometheus"), f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = srv.ServerProcess("prometheus", proc, log)
    try:
        srv.ready(server, f"http://127.0.0.1:{port}/-/ready", 30.0)
    except BaseException:
        server.stop()
        raise
    return srv.PrometheusServer(f"http://127.0.0.1:{port}", server)


@pytest.fixture(scope="module")
def pool_run(
    ray_address: str, tiny_model: TinyModelPaths, rotel: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PoolRun]:
    """Two workers, traced to rotel-agent and scraped by a real Prometheus (which holds the
    run's final values before this yields)."""
    from swayscope.instrumentation.exporters.otel import OtelExporter
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

    recorder = Recorder()
    otel = OtelExporter(endpoint=rotel.http_endpoint, protocol="http/protobuf",
                        service_name="swayscope-ray-test")
    prom = PrometheusExporter(port=0, first_scrape_wait_s=30.0)
    prometheus = start_prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{prom.port}")
    try:
        inst = BackendInstrumentation(exporters=[otel, prom, recorder])
        backend = pool_backend(tiny_model, 2, inst=inst)
        try:
            with inst.run(suite="ray-traces", total_probes=1) as run, inst.probe("p"):
                with backend.ft() as view:
                    view.next_token_dist_batch(PROMPTS, top_k=TOP_K)
                with backend.null(5) as view:
                    view.next_token_dist_batch(PROMPTS[:10], top_k=TOP_K)
            tokens = sum(e.n_tokens for e in recorder.events if isinstance(e, WorkerCallEnded))
            scraped = exporter_servers().wait_for(
                lambda: prometheus.scalar("sum(swayscope_worker_tokens_total)") == tokens, 30.0
            )
            assert scraped, "Prometheus never scraped the workers' final token counts"
        finally:
            backend.close()
        yield PoolRun(list(recorder.events), run.run_id, rotel, prometheus)
    finally:
        prometheus.process.stop()


def test_worker_spans_arrive_under_the_driver_forward_spans(pool_run: PoolRun) -> None:
    srv = exporter_servers()
    rotel = pool_run.rotel
    parts = [e for e in pool_run.events if isinstance(e, WorkerCallEnded)]
    calls = [e for e in pool_run.events if isinstance(e, ForwardCall)]
    assert parts and all(e.span_id for e in parts)
    assert all(c.trace_id and c.span_id for c in calls)

    def arrived() -> list[Any] | None:
        spans = [s for t in srv.traces_of_run(rotel.spans(), pool_run.run_id).values() for s in t]
        computes = [s for s in spans if s.name == "swayscope.worker.compute"]
        return spans if len(computes) >= len(parts) else None

    spans = srv.wait_for(arrived, 30.0)
    assert spans, f"worker spans did not arrive: {rotel.process.output()[-3000:]}"
    forwards = {(s.trace_id, s.span_id): s for s in spans if s.name == "swayscope.forward"}
    assert {(c.trace_id, c.span_id) for c in calls} <= set(forwards)
    workers = [s for s in spans if s.name.startswith("swayscope.worker.")]
    assert {s.name for s in workers} == {"swayscope.worker.queue", "swayscope.worker.compute"}
    for span in workers:
        parent = forwards.get((span.trace_id, span.parent_id))
        assert parent is not None, f"{span.name} {span.span_id} is not under a forward span"
        assert span.attributes["swayscope.worker"] in ('"0"', '"1"', "0", "1")
    computes = {s.span_id for s in workers if s.name == "swayscope.worker.compute"}
    assert computes == {e.span_id for e in parts}  # the ids the workers chose
    # Both workers took part in the traced calls.
    assert {e.worker for e in parts} == {"0", "1"}


def test_the_dashboard_worker_row_has_data_for_each_worker(pool_run: PoolRun) -> None:
    """Every query of the per-worker row returns data from Prometheus, for each worker."""
    dq = dashboard_queries()
    for worker in ("0", "1"):
        values = {"job": "swayscope", "run_id": pool_run.run_id, "worker": worker}
        exprs = dq.dashboard_exprs_by_panel(values=values, rows=(dq.WORKER_ROW,))
        assert len(exprs) >= 6
        empty = [f"{title} [{ref}]: {expr}" for title, ref, expr in exprs
                 if not pool_run.prometheus.query(expr)]
        assert not empty, f"worker {worker}: queries without data:\n" + "\n".join(empty)
    up = pool_run.prometheus.query("swayscope_worker_up")
    assert sorted(r["metric"]["worker"] for r in up) == ["0", "1"]
