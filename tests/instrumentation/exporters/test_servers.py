"""Against real servers: Prometheus scrapes us, rotel receives our spans, Pushgateway gets pushes,
and a dead or silent collector costs the run nothing but counted drops.

Locally these skip when a binary is missing; with ``CI`` set they fail instead.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from exporter_servers import (
    PrometheusServer,
    ReceivedSpan,
    RotelAgent,
    free_port,
    http_get,
    traces_of_run,
    wait_for,
)

from swayscope.backends.dummy import DummyBackend
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import (
    PrometheusExporter,
    default_push_instance,
)

pytestmark = pytest.mark.server


def workload(inst: BackendInstrumentation, *, probes: int = 2, calls: int = 6) -> None:
    """A dummy-backend run: singles, batches, repeats (hits), two views per probe."""
    backend = DummyBackend(inst=inst)
    with inst.run(suite="server-suite", adapter="lora", total_probes=probes):
        for p in range(probes):
            with inst.probe(f"probe_{p}", "delta_kl") as handle:
                with backend.base() as v:
                    for i in range(calls):
                        v.next_token_dist(f"prompt {i}", top_k=4)
                    v.next_token_dist_batch([f"prompt {i}" for i in range(calls + 3)], top_k=4)
                with backend.ft() as v:
                    v.next_token_dist_batch([f"prompt {i % 3}" for i in range(calls)], top_k=4)
                handle.status = "pass"


def test_real_prometheus_scrape_gives_the_backend_hit_rate(
    start_prometheus: Callable[[list[str]], PrometheusServer],
) -> None:
    prom = PrometheusExporter(port=0)
    inst = BackendInstrumentation(exporters=[prom])
    try:
        workload(inst)
        expected = inst.stats.hit_rate
        assert 0 < expected < 1
        server = start_prometheus([f"127.0.0.1:{prom.port}"])
        ratio = (
            "sum(swayscope_cache_hits_total)"
            " / (sum(swayscope_cache_hits_total) + sum(swayscope_cache_misses_total))"
        )
        got = wait_for(lambda: server.scalar(ratio), 20.0, 0.25)
        assert got is not None, server.process.output()[-2000:]
        assert got == pytest.approx(expected, rel=1e-12)
        assert server.scalar("sum(swayscope_forward_calls_total)") == inst.stats.forward_calls
        (info,) = server.query("swayscope_run_info")
        assert info["metric"]["run_id"] == inst.run_id
        assert server.scalar('up{job="swayscope"}') == 1.0
    finally:
        inst.close()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_rotel_receives_the_run_spans(rotel_agent: RotelAgent, protocol: str) -> None:
    endpoint = rotel_agent.http_endpoint if protocol != "grpc" else rotel_agent.grpc_endpoint
    exporter = OtelExporter(
        endpoint=endpoint, protocol=protocol, service_name=f"swayscope-test-{protocol}"
    )
    inst = BackendInstrumentation(exporters=[exporter], model_name="dummy")
    workload(inst)
    inst.close()
    assert inst.health.spans_dropped == 0
    # From the receiver's side: every trace of the run is found by its run_id; the run is
    # one trace, each probe another, linked to it.
    expected = {
        "swayscope.run": 1,
        "swayscope.probe": 2,
        "swayscope.view": 4,
        "swayscope.forward": inst.stats.forward_calls,
    }
    captured: dict[str, list[ReceivedSpan]] = {}

    def arrived() -> bool:
        spans = [s for t in traces_of_run(rotel_agent.spans(), inst.run_id).values() for s in t]
        names = [s.name for s in spans]
        captured["spans"] = spans
        return {n: names.count(n) for n in expected} == expected

    assert wait_for(arrived, 15.0, 0.2), rotel_agent.process.output()[-3000:]
    spans = captured["spans"]
    by_id = {s.span_id: s for s in spans}
    (run,) = (s for s in spans if s.name == "swayscope.run")
    for s in spans:
        assert s.kind == "SPAN_KIND_INTERNAL"
        assert s.service == f"swayscope-test-{protocol}"
        if s.name == "swayscope.forward":
            assert by_id[s.parent_id].name == "swayscope.view"
            assert s.attributes["swayscope.op"] == "next_token_dist"
            assert s.attributes["gen_ai.request.model"] == "dummy"
            assert "gen_ai.operation.name" not in s.attributes
            assert int(s.attributes["swayscope.batch.size"]) >= 1
        if s.name == "swayscope.view":
            assert by_id[s.parent_id].name == "swayscope.probe"
        if s.name == "swayscope.probe":
            assert s.parent_id == "" and s.trace_id != run.trace_id
            assert [(link.span_id, link.attributes) for link in s.links] == [
                (run.span_id, {"swayscope.link": "run"})
            ]
            assert s.attributes["swayscope.run_id"] == inst.run_id


def timed_run(exporters: list[OtelExporter]) -> tuple[float, float, BackendInstrumentation]:
    """(seconds inside the run, seconds including close(), the instrumentation)."""
    inst = BackendInstrumentation(exporters=exporters)
    t0 = time.perf_counter()
    with inst.run(suite="timed", total_probes=2):
        for p in range(2):
            with inst.probe(f"p{p}"), inst.view("ft"):
                for i in range(120):
                    # ~1 ms of "model" per call: a run long enough to compare
                    inst.cached("next_token_dist", "ft", f"x{i}", 8, _slow_compute)
                    inst.cached("next_token_dist", "ft", f"x{i}", 8, _slow_compute)
    run_s = time.perf_counter() - t0
    inst.close()
    return run_s, time.perf_counter() - t0, inst


def _slow_compute() -> float:
    time.sleep(0.001)
    return 1.0


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_collector_down_costs_nothing_but_counted_drops(protocol: str) -> None:
    port = free_port()  # nothing listens here
    base_run, base_total, _ = timed_run([])
    exporter = OtelExporter(endpoint=f"http://127.0.0.1:{port}", protocol=protocol)
    run_s, total_s, inst = timed_run([exporter])
    n_spans = 2 + 2 + 2 + inst.stats.forward_calls
    assert inst.stats.forward_calls == 120
    assert inst.health.spans_dropped == n_spans  # every span: undelivered and counted
    # Within noise of the run without OTel (generous: 1.5x + 0.25 s).
    assert run_s < 1.5 * base_run + 0.25, (run_s, base_run)
    assert total_s < 1.5 * base_total + 0.25, (total_s, base_total)


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung collector."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(srv.getsockname()[1])
    stop.set()
    thread.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_silent_collector_bounds_the_end_of_the_run(silent_collector: int) -> None:
    base_run, _, _ = timed_run([])
    exporter = OtelExporter(
        endpoint=f"http://127.0.0.1:{silent_collector}",
        export_timeout_s=1.0,
        flush_timeout_s=0.5,
        shutdown_timeout_s=1.0,
    )
    run_s, total_s, inst = timed_run([exporter])
    # The probes are not slowed; the final flush waits flush_timeout_s at most, and
    # close() shutdown_timeout_s at most.
    assert run_s < 1.5 * base_run + 0.5 + 0.25, (run_s, base_run)
    assert total_s - run_s < 1.0 + 0.5, (total_s, run_s)
    assert inst.health.spans_dropped == 2 + 2 + 2 + inst.stats.forward_calls


def test_pushgateway_gets_periodic_and_final_pushes(pushgateway: str) -> None:
    prom = PrometheusExporter(pushgateway_url=pushgateway, push_interval_s=0.2, push_job="sw-test")
    inst = BackendInstrumentation(exporters=[prom])
    # Pushed series carry job and instance (host:pid), as scraped ones do.
    group = f'instance="{default_push_instance()}",job="sw-test",run_id="run-push-1"'
    with inst.run(suite="push", run_id="run-push-1"), inst.view("ft"):
        inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)

        def pushed_while_running() -> bool:
            text = http_get(f"{pushgateway}/metrics")[1]
            return f"swayscope_run_active{{{group}}} 1" in text

        assert wait_for(pushed_while_running, 5.0, 0.1)
        inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
    inst.close()
    text = http_get(f"{pushgateway}/metrics")[1]
    assert f"swayscope_run_active{{{group}}} 0" in text
    assert f"push_time_seconds{{{group}}} " in text
    hits = [
        line for line in text.splitlines()
        if line.startswith("swayscope_cache_hits_total{") and 'run_id="run-push-1"' in line
    ]
    # Every (op, view_kind) series of the run exists from its start (at 0); one was hit.
    counted = [line for line in hits if not line.endswith(" 0")]
    assert len(counted) == 1 and counted[0].endswith(" 1"), hits
    assert 'job="sw-test"' in counted[0]
    assert not any("probe=" in line for line in hits)
    assert inst.health.exporter_errors() == {}
