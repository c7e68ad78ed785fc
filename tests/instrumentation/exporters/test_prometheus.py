"""Prometheus exporter: every metric, exposition formats, HTTP endpoint, config errors."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from typing import Any

import pytest
from exporter_servers import http_get, need_binary
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families
from sway_testing import cli_exporters

from swayscope.backends.dummy import DummyBackend
from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation import BackendInstrumentation, Exporter, prompt_hash
from swayscope.instrumentation.events import Event
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import (
    BATCH_SIZE_BUCKETS,
    FORWARD_DURATION_BUCKETS,
    PrometheusExporter,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Broken(Exporter):
    name = "broken"

    def export(self, event: Event) -> None:
        raise RuntimeError("always fails")


def run_workload(inst: BackendInstrumentation, *, fail: bool = True) -> None:
    backend = DummyBackend(inst=inst)
    with inst.run(suite="suite-a", adapter="lora-a", total_probes=3):
        with inst.probe("delta_kl", "delta_kl") as p:
            with backend.base() as v:
                v.next_token_dist("alpha", top_k=4)
                v.next_token_dist("alpha", top_k=4)
                v.next_token_dist_batch(["alpha", "beta", "gamma", "delta"], top_k=4)
            with backend.ft() as v:
                v.next_token_dist_batch(["alpha", "beta"], top_k=4)
                v.rolling_logprob("some longer text")
            p.status = "pass"
        with inst.probe("prompt_collapse", "prompt_collapse") as p:
            with backend.scaled(1.5) as v:
                v.next_token_dist("alpha", top_k=4)
                v.next_token_dist("alpha", top_k=4)
            p.status = "warn"
        if fail:
            with pytest.raises(ValueError), inst.probe("broken"), inst.view("null_3_i1.0_r1.0"):
                inst.cached("logprob_of", "null_3_i1.0_r1.0", "x", 0, _boom)


def _boom() -> float:
    raise ValueError("boom")


def sample(exp: PrometheusExporter, name: str, **labels: str) -> float | None:
    return exp.registry.get_sample_value(name, labels)


def test_every_metric_after_a_dummy_run() -> None:
    prom = PrometheusExporter()
    inst = BackendInstrumentation(exporters=[prom, Broken()], cache_maxsize=4, model_name="m")
    inst.health.record_spans_dropped(7)
    run_workload(inst)
    s = inst.stats

    def g(name: str, **labels: str) -> float:
        value = sample(prom, name, **labels)
        assert value is not None, (name, labels)
        return value

    base = {"op": "next_token_dist", "view_kind": "base"}
    # alpha again, alone and in the batch; no disk cache, so every hit is the memory's
    assert g("swayscope_cache_hits_total", **base, tier="memory") == 2
    assert g("swayscope_cache_hits_total", **base, tier="disk") == 0
    assert g("swayscope_cache_misses_total", **base) == 4
    assert g("swayscope_forward_calls_total", **base) == 2
    assert g("swayscope_cache_hits_total", op="next_token_dist", view_kind="scaled",
             tier="memory") == 1
    nulls = {"op": "logprob_of", "view_kind": "null"}
    assert g("swayscope_cache_misses_total", **nulls) == 1  # a call that raised is a miss
    assert g("swayscope_forward_calls_total", **nulls) == 1

    def total(name: str) -> float:
        return sum(
            smp.value
            for fam in prom.registry.collect()
            for smp in fam.samples
            if smp.name == name
        )

    assert total("swayscope_cache_hits_total") == s.cache_hits
    assert total("swayscope_cache_misses_total") == s.cache_misses
    assert total("swayscope_forward_calls_total") == s.forward_calls
    assert total("swayscope_forward_prompts_total") == s.cache_misses
    assert g("swayscope_forward_prompts_total", op="next_token_dist", view_kind="base") == 4
    assert g("swayscope_forward_prompts_total", op="logprob_of", view_kind="ft") == 0  # pre-made

    # next_token_dist calls: base alpha (1), base batch (3), ft batch (2), scaled alpha (1)
    assert g("swayscope_batch_size_bucket", op="next_token_dist", le="1.0") == 2
    assert g("swayscope_batch_size_bucket", op="next_token_dist", le="2.0") == 3
    assert g("swayscope_batch_size_bucket", op="next_token_dist", le="4.0") == 4
    assert g("swayscope_batch_size_bucket", op="next_token_dist", le="512.0") == 4
    assert g("swayscope_batch_size_bucket", op="next_token_dist", le="+Inf") == 4
    assert g("swayscope_batch_size_count", op="next_token_dist") == 4
    assert g("swayscope_batch_size_sum", op="next_token_dist") == 1 + 3 + 2 + 1
    assert g("swayscope_forward_duration_seconds_count", op="next_token_dist",
             view_kind="base") == 2
    assert g("swayscope_forward_duration_seconds_bucket", op="rolling_logprob",
             view_kind="ft", le="+Inf") == 1
    assert g("swayscope_forward_duration_seconds_sum", op="next_token_dist",
             view_kind="base") > 0

    assert g("swayscope_cache_entries") == len(inst.cache) == 4
    assert g("swayscope_cache_bytes") == inst.cache.nbytes > 0
    assert g("swayscope_cache_evictions_total") == inst.cache.evictions > 0
    assert g("swayscope_tokens_total", view_kind="base") == sum(
        len(p) for p in ("alpha", "beta", "gamma", "delta")
    )
    assert g("swayscope_tokens_total", view_kind="null") == 0

    assert g("swayscope_probe_duration_seconds", probe="delta_kl", status="pass") >= 0
    assert g("swayscope_probe_duration_seconds", probe="broken", status="error") >= 0
    assert sample(prom, "swayscope_probe_duration_seconds", probe="broken", status="pass") is None
    assert g("swayscope_probes_total", status="pass") == 1
    assert g("swayscope_probes_total", status="warn") == 1
    assert g("swayscope_probes_total", status="error") == 1
    assert g("swayscope_probes_total", status="skip") == 0
    assert g("swayscope_run_info", run_id=inst.run_id, suite="suite-a", base_model="m",
             adapter="lora-a") == 1
    assert g("swayscope_run_active") == 0
    assert g("swayscope_run_progress_ratio") == 1.0
    assert abs(g("swayscope_run_start_time_seconds") - time.time()) < 60
    assert g("swayscope_exporter_errors_total", exporter="broken") > 0
    assert g("swayscope_exporter_errors_total", exporter="otel") == 0
    assert g("swayscope_spans_dropped_total") == 7
    inst.close()


def test_run_gauges_while_running() -> None:
    prom = PrometheusExporter()
    inst = BackendInstrumentation(exporters=[prom])
    with inst.run(suite="s", total_probes=4):
        assert sample(prom, "swayscope_run_active") == 1
        assert sample(prom, "swayscope_run_progress_ratio") == 0
        with inst.probe("a") as p:
            p.status = "pass"
        assert sample(prom, "swayscope_run_progress_ratio") == 0.25
    assert sample(prom, "swayscope_run_active") == 0
    with inst.run(suite="second", run_id="second-run"):
        pass
    runs = [
        smp.labels["run_id"]
        for fam in prom.registry.collect()
        for smp in fam.samples
        if smp.name == "swayscope_run_info"
    ]
    assert runs == ["second-run"]  # one run_info series: the current run
    inst.close()


def test_runs_side_by_side_in_a_sweep_keep_their_own_series() -> None:
    """A sweep's adapters running at once: one run's start clears none of another live
    run's series; each adapter has its own score and progress; the run is active while
    any of them is."""
    from swayscope.instrumentation import ProbeEnded, RunEnded, RunStarted, SweepStarted

    prom = PrometheusExporter()
    prom.export(SweepStarted(sweep_id="s", start_ns=0, adapters=("a", "b", "c")))
    assert sample(prom, "swayscope_sweep_adapter_progress_ratio", adapter="c") == 0

    def start(run: str, adapter: str) -> None:
        prom.export(RunStarted(run_id=run, start_ns=0, adapter=adapter, total_probes=2))

    def probe(run: str, name: str, done: int, score: float, status: Any = "pass") -> None:
        prom.export(ProbeEnded(run_id=run, probe=name, kind=name, end_ns=0, duration_s=0.5,
                               status=status, score=score, done=done, total=2))

    start("r1", "a")
    probe("r1", "p", 1, 1.0)
    start("r2", "b")  # starts while r1 is live
    assert sample(prom, "swayscope_probe_score", probe="p", adapter="a") == 1.0
    assert sample(prom, "swayscope_sweep_adapter_progress_ratio", adapter="a") == 0.5
    assert sample(prom, "swayscope_run_progress_ratio") == 0.25  # 1 of the 4 probes live
    probe("r2", "p", 1, 2.0, status="fail")
    probe("r2", "q", 2, 3.0)
    assert sample(prom, "swayscope_probe_score", probe="p", adapter="b") == 2.0
    assert sample(prom, "swayscope_probe_score", probe="p", adapter="a") == 1.0
    # one duration series per probe: its status as the run that finished it last had it
    assert sample(prom, "swayscope_probe_duration_seconds", probe="p", status="fail") == 0.5
    assert sample(prom, "swayscope_probe_duration_seconds", probe="p", status="pass") is None
    prom.export(RunEnded(run_id="r2", end_ns=0, duration_s=1.0))
    assert sample(prom, "swayscope_run_active") == 1  # r1 still runs
    assert sample(prom, "swayscope_sweep_adapter_progress_ratio", adapter="b") == 1.0
    assert sample(prom, "swayscope_run_progress_ratio") == 0.5  # r1 alone now
    probe("r1", "q", 2, 4.0)
    prom.export(RunEnded(run_id="r1", end_ns=0, duration_s=1.0))
    assert sample(prom, "swayscope_run_active") == 0
    assert sample(prom, "swayscope_sweep_progress_ratio") == pytest.approx(2 / 3)
    runs = {
        smp.labels["run_id"]: smp.labels["adapter"]
        for fam in prom.registry.collect() for smp in fam.samples
        if smp.name == "swayscope_run_info"
    }
    assert runs == {"r1": "a", "r2": "b"}  # a sweep's runs side by side
    prom.shutdown()


def test_promql_hit_ratio_inputs_equal_backend_stats() -> None:
    prom = PrometheusExporter()
    inst = BackendInstrumentation(exporters=[prom])
    run_workload(inst)
    hits = sum(
        smp.value for fam in prom.registry.collect() for smp in fam.samples
        if smp.name == "swayscope_cache_hits_total"
    )
    misses = sum(
        smp.value for fam in prom.registry.collect() for smp in fam.samples
        if smp.name == "swayscope_cache_misses_total"
    )
    assert hits / (hits + misses) == pytest.approx(inst.stats.hit_rate, rel=1e-12)
    inst.close()


def test_labels_stay_bounded() -> None:
    prom = PrometheusExporter()
    inst = BackendInstrumentation(exporters=[prom])
    run_workload(inst)
    text = generate_latest(prom.registry).decode()
    for secret in ("scaled_1.5", "null_3_i1.0_r1.0", prompt_hash("alpha"), "alpha"):
        assert secret not in text
    kinds = {
        smp.labels["view_kind"]
        for fam in prom.registry.collect()
        for smp in fam.samples
        if "view_kind" in smp.labels
    }
    assert kinds <= {"base", "ft", "scaled", "null"}
    inst.close()


def _run_with_otel() -> tuple[PrometheusExporter, BackendInstrumentation, set[str]]:
    mem = InMemorySpanExporter()
    prom = PrometheusExporter()
    inst = BackendInstrumentation(exporters=[prom, OtelExporter(span_exporter=mem, batch=False)])
    run_workload(inst)
    traces = {f"{s.context.trace_id:032x}" for s in mem.get_finished_spans() if s.context}
    return prom, inst, traces


def test_exposition_parses_in_both_formats_with_exemplars() -> None:
    prom, inst, traces = _run_with_otel()
    text = generate_latest(prom.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "swayscope_cache_hits", "swayscope_cache_misses", "swayscope_forward_calls",
        "swayscope_forward_prompts", "swayscope_batch_size", "swayscope_forward_duration_seconds",
        "swayscope_cache_entries", "swayscope_cache_bytes", "swayscope_cache_evictions",
        "swayscope_tokens", "swayscope_probe_duration_seconds", "swayscope_probes",
        "swayscope_run_info", "swayscope_run_active", "swayscope_run_progress_ratio",
        "swayscope_run_start_time_seconds", "swayscope_exporter_errors", "swayscope_spans_dropped",
    ):
        assert name in families, name
    assert families["swayscope_forward_duration_seconds"].type == "histogram"
    assert families["swayscope_cache_hits"].type == "counter"
    assert "# {" not in text  # no exemplars in the classic text format

    om_text = om_exposition.generate_latest(prom.registry).decode()
    om = {f.name: f for f in om_parser.text_string_to_metric_families(om_text)}
    exemplars = [
        smp.exemplar for smp in om["swayscope_forward_duration_seconds"].samples if smp.exemplar
    ]
    assert exemplars
    assert {e.labels["trace_id"] for e in exemplars} <= traces
    assert all(len(e.labels["trace_id"]) == 32 for e in exemplars)
    assert all(len(e.labels["span_id"]) == 16 for e in exemplars)
    buckets = [
        smp.labels["le"] for smp in om["swayscope_forward_duration_seconds"].samples
        if smp.name.endswith("_bucket") and smp.labels.get("op") == "next_token_dist"
        and smp.labels.get("view_kind") == "base"
    ]
    assert [float(b) for b in buckets[:-1]] == list(FORWARD_DURATION_BUCKETS)
    assert FORWARD_DURATION_BUCKETS[0] == 0.0005 and FORWARD_DURATION_BUCKETS[-1] == 120
    assert BATCH_SIZE_BUCKETS == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    inst.close()


def test_promtool_check_metrics_accepts_the_exposition() -> None:
    promtool = need_binary("promtool")
    prom, inst, _ = _run_with_otel()
    text = generate_latest(prom.registry)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""  # no lint warnings
    inst.close()


def test_http_endpoint_negotiates_openmetrics_with_exemplars() -> None:
    prom = PrometheusExporter(port=0)
    try:
        assert prom.port and prom.port > 0
        assert prom.url == f"http://127.0.0.1:{prom.port}/metrics"
        inst = BackendInstrumentation(
            exporters=[prom, OtelExporter(span_exporter=InMemorySpanExporter(), batch=False)]
        )
        run_workload(inst, fail=False)
        status, text = http_get(prom.url)
        assert status == 200 and "swayscope_cache_hits_total" in text and "# {" not in text
        status, om_text = http_get(prom.url, accept=OPENMETRICS)
        assert om_text.rstrip().endswith("# EOF")
        assert '# {span_id="' in om_text and ',trace_id="' in om_text  # labels sorted
        list(om_parser.text_string_to_metric_families(om_text))  # parses
    finally:
        prom.shutdown()
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{prom.port}/metrics", timeout_s=1.0)


def test_port_in_use_or_bad_address_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(TelemetryConfigError) as err:
            PrometheusExporter(port=port)
        assert f"127.0.0.1:{port}" in str(err.value)
        assert "PrometheusExporter(port=...)" in str(err.value)
        with pytest.raises(TelemetryConfigError) as err:
            cli_exporters(metrics_port=port, env={})
        assert "--metrics-port" in str(err.value) and str(port) in str(err.value)
    with pytest.raises(TelemetryConfigError, match=r"no-such-host\.invalid"):
        PrometheusExporter(address="no-such-host.invalid", port=0)
    for bad in ("70000", "-1", "http", "9090x"):
        with pytest.raises(TelemetryConfigError, match="--metrics-port"):
            cli_exporters(metrics_port=bad, env={})
    with pytest.raises(TelemetryConfigError, match="--metrics-address"):
        cli_exporters(metrics_address="http://x/", metrics_port=0, env={})
    with pytest.raises(TelemetryConfigError, match="--pushgateway"):
        cli_exporters(pushgateway="ftp://gw:9091", env={})
    with pytest.raises(TelemetryConfigError, match="--metrics-linger"):
        cli_exporters(metrics_port=0, metrics_linger_s="soon", env={})
    # the caller may say where each value came from (a spec file, say)
    spec = {"metrics_port": "telemetry.metrics_port in suite.yaml", "pushgateway": "spec: push"}
    with pytest.raises(TelemetryConfigError, match=r"telemetry\.metrics_port in suite\.yaml"):
        cli_exporters(metrics_port="x", env={}, sources=spec)
    with pytest.raises(TelemetryConfigError, match="spec: push"):
        cli_exporters(pushgateway="ftp://gw", env={}, sources=spec)


def test_build_exporters_serves_metrics_and_cleans_up_on_error() -> None:
    (prom,) = cli_exporters(metrics_port=0, env={})
    assert isinstance(prom, PrometheusExporter) and prom.port
    prom.shutdown()
    # a bad OTLP setting after a good metrics port: nothing is left listening
    with pytest.raises(TelemetryConfigError):
        cli_exporters(metrics_port=0, otlp_endpoint="bad url", env={})


def test_linger_waits_for_one_more_scrape() -> None:
    prom = PrometheusExporter(port=0, linger_s=10.0)
    inst = BackendInstrumentation(exporters=[prom])
    with inst.run(), inst.view("ft"):
        inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
    seen: list[str] = []

    def scrape_soon() -> None:
        time.sleep(0.3)
        seen.append(http_get(str(prom.url))[1])

    scraper = threading.Thread(target=scrape_soon)
    scraper.start()
    t0 = time.perf_counter()
    inst.close()  # lingers until the scrape
    waited = time.perf_counter() - t0
    scraper.join(5)
    assert 0.2 < waited < 5.0
    assert "swayscope_run_active 0.0" in seen[0]
    line = 'swayscope_forward_calls_total{op="next_token_dist",view_kind="ft"} 1.0'
    assert line in seen[0]

    prom = PrometheusExporter(port=0, linger_s=0.3)
    t0 = time.perf_counter()
    prom.shutdown()  # nobody scrapes: up for linger_s, then down
    assert 0.25 < time.perf_counter() - t0 < 3.0


def test_global_registry_option() -> None:
    prom = PrometheusExporter(use_global_registry=True)
    try:
        assert prom.registry is REGISTRY
        assert REGISTRY.get_sample_value("swayscope_run_active") == 0
        with pytest.raises(TelemetryConfigError, match="already registered"):
            PrometheusExporter(use_global_registry=True)
    finally:
        prom.shutdown()
    assert REGISTRY.get_sample_value("swayscope_run_active") is None
    PrometheusExporter(use_global_registry=True).shutdown()  # can register again


def test_run_start_zeroes_every_series_and_can_wait_for_a_scrape() -> None:
    """rate() loses the increment that creates a series: so the run's series exist at 0
    first, and with first_scrape_wait_s the run starts only after a scrape saw them."""
    prom = PrometheusExporter(port=0, first_scrape_wait_s=10.0)
    inst = BackendInstrumentation(exporters=[prom])
    started = threading.Event()

    def run() -> None:
        with inst.run(suite="s", probes=["alpha", "beta"]):
            started.set()
            with inst.probe("alpha"):
                inst.cached("next_token_dist", "base", "p", 8, lambda: 1.0)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.3)
    assert not started.is_set(), "the run must wait for the first scrape"
    assert prom.url is not None
    first = http_get(prom.url)[1]
    worker.join(10)
    assert started.is_set()
    zero = [
        line for line in first.splitlines()
        if line.startswith("swayscope_cache_misses_total{") and line.endswith(" 0.0")
    ]
    # 4 ops (3 scoring, generate) x 4 view kinds, all present and 0 before any lookup; no
    # probe label.
    assert len(zero) == 4 * 4
    assert any('view_kind="null"' in line for line in zero)
    assert not any("probe=" in line for line in zero)
    after = http_get(prom.url)[1]
    assert 'swayscope_cache_misses_total{op="next_token_dist",view_kind="base"} 1.0' in after
    inst.close()


def test_first_scrape_wait_is_bounded_when_nobody_scrapes() -> None:
    prom = PrometheusExporter(port=0, first_scrape_wait_s=0.4)
    inst = BackendInstrumentation(exporters=[prom])
    t0 = time.monotonic()
    with inst.run(suite="s", probes=["alpha"]):
        pass
    assert 0.35 <= time.monotonic() - t0 < 3.0
    inst.close()
