"""Static checks of the operations kit: Grafana dashboard, provisioning, Prometheus
config and rules (with their promtool unit tests), Alertmanager and docker-compose.

The promtool and docker-compose checks need the binaries. Locally a missing binary
skips with a message; with the CI environment variable set it fails instead, so CI
can never go green without having run them.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sway_testing import missing

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DASHBOARDS = REPO / "dashboards"
DASHBOARD_JSON = DASHBOARDS / "grafana" / "swayscope.json"
PROM_CONFIG = DASHBOARDS / "prometheus" / "prometheus.yml"
RULES = DASHBOARDS / "prometheus" / "rules" / "swayscope.rules.yml"
RULE_TESTS = DASHBOARDS / "prometheus" / "tests" / "swayscope.rules.test.yml"
DATASOURCES = DASHBOARDS / "grafana" / "provisioning" / "datasources" / "datasources.yml"
PROVIDERS = DASHBOARDS / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
ALERTMANAGER = DASHBOARDS / "alertmanager" / "alertmanager.yml"
COLLECTOR = DASHBOARDS / "otel-collector" / "config.yaml"
COMPOSE = REPO / "docker-compose.yml"
RUNBOOK = REPO / "docs" / "runbook.md"


def _load_helper() -> Any:
    # Loaded by path so it works whatever pytest's import mode and tests/ layout are.
    spec = importlib.util.spec_from_file_location(
        "ops_dashboard_queries", HERE / "dashboard_queries.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dq = _load_helper()

# The public metric contract (DESIGN.md, "Telemetry contract"); the dashboard may
# only use these names, so that a typo cannot hide behind an empty panel.
COUNTERS = {
    "swayscope_cache_hits_total",
    "swayscope_cache_misses_total",
    "swayscope_forward_calls_total",
    "swayscope_forward_prompts_total",
    "swayscope_cache_evictions_total",
    "swayscope_tokens_total",
    "swayscope_probes_total",
    "swayscope_exporter_errors_total",
    "swayscope_spans_dropped_total",
    "swayscope_worker_busy_seconds_total",
    "swayscope_worker_tokens_total",
    "swayscope_worker_failures_total",
    "swayscope_disk_cache_write_failures_total",
}
GAUGES = {
    "swayscope_cache_entries",
    "swayscope_cache_bytes",
    "swayscope_disk_cache_entries",
    "swayscope_disk_cache_bytes",
    "swayscope_disk_cache_evictions",
    "swayscope_run_info",
    "swayscope_run_active",
    "swayscope_run_progress_ratio",
    "swayscope_run_start_time_seconds",
    "swayscope_probe_duration_seconds",
    "swayscope_probe_score",
    "swayscope_sweep_progress_ratio",
    "swayscope_sweep_adapter_progress_ratio",
    "swayscope_worker_up",
    "swayscope_worker_in_flight_calls",
    "swayscope_worker_memory_bytes",
    "swayscope_worker_device_memory_bytes",
}
HISTOGRAMS = {
    "swayscope_batch_size",
    "swayscope_forward_duration_seconds",
    "swayscope_worker_forward_duration_seconds",
    "swayscope_worker_queue_wait_seconds",
    "swayscope_worker_batch_size",
}
CONTRACT = (
    COUNTERS
    | GAUGES
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)
ALERTS = {
    "SwayscopeCacheHitRateDrop",
    "SwayscopeRunStalled",
    "SwayscopeTelemetryLoss",
    "SwayscopeForwardLatencyHigh",
}


# --------------------------------------------------------------------------- helpers


def _missing(what: str) -> None:
    missing(f"{what} not found on PATH; install it (.ci/run does)", "the ops checks")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(name)
    assert path is not None
    return path


def _compose_command() -> list[str]:
    path = shutil.which("docker-compose")
    if path:
        return [path]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    _missing("docker-compose (or the docker compose plugin)")
    raise AssertionError("unreachable")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def _yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _dashboard() -> dict[str, Any]:
    return dq.load_dashboard(DASHBOARD_JSON)  # type: ignore[no-any-return]


def _panels() -> list[dict[str, Any]]:
    return list(dq.iter_panels(_dashboard()["panels"]))


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return dq.panel_targets(DASHBOARD_JSON)  # type: ignore[no-any-return]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"]]


def _github_anchor(heading: str) -> str:
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


# --------------------------------------------------------------------------- binaries


@pytest.mark.server
def test_promtool_check_config() -> None:
    promtool = _binary("promtool")
    out = _run([promtool, "check", "config", str(PROM_CONFIG.relative_to(REPO))])
    assert "SUCCESS" in out.stdout + out.stderr


@pytest.mark.server
def test_promtool_check_rules() -> None:
    promtool = _binary("promtool")
    out = _run([promtool, "check", "rules", str(RULES.relative_to(REPO))])
    assert "SUCCESS" in out.stdout + out.stderr


@pytest.mark.server
def test_promtool_test_rules() -> None:
    promtool = _binary("promtool")
    out = _run([promtool, "test", "rules", str(RULE_TESTS.relative_to(REPO))])
    assert "SUCCESS" in out.stdout + out.stderr
    assert "FAILED" not in out.stdout + out.stderr


@pytest.mark.server
@pytest.mark.parametrize("profile", [None, "collector"])
def test_docker_compose_config(profile: str | None) -> None:
    cmd = _compose_command()
    if profile:
        cmd += ["--profile", profile]
    _run([*cmd, "config", "-q"])


@pytest.mark.server
def test_alertmanager_config_with_amtool() -> None:
    # amtool ships with Debian's prometheus-alertmanager, which CI installs.
    amtool = _binary("amtool")
    _run([amtool, "check-config", str(ALERTMANAGER.relative_to(REPO))])


# --------------------------------------------------------------------------- dashboard


def test_dashboard_is_provisionable() -> None:
    dashboard = _dashboard()
    assert dashboard["id"] is None
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert dashboard["uid"] == "swayscope"
    assert "${DS_" not in DASHBOARD_JSON.read_text(encoding="utf-8")


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert {"datasource", "job", "instance", "run_id"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "run_id"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] in ("${datasource}", "$datasource")
        assert var["includeAll"] is True and var["allValue"] == ".*"
        assert "swayscope_run_info" in var["definition"]
        assert var["definition"].endswith(f", {name})")


def test_every_panel_uses_the_datasource_variable() -> None:
    for panel in _panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in ("${datasource}", "$datasource"), panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in ("${datasource}", "$datasource"), panel["title"]


def test_every_target_has_an_expr() -> None:
    targets = _targets()
    assert targets
    for panel, target in targets:
        assert isinstance(target.get("expr"), str), panel["title"]
        assert target["expr"].strip(), panel["title"]


def test_rows() -> None:
    rows = [p["title"] for p in _panels() if p["type"] == "row"]
    assert rows == [
        "Run", "Cache", "Forward", "Probes", "Sweep", "Health", "Worker $worker", "Disk cache",
    ]


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids))


def test_row_contents() -> None:
    """Each row queries the metrics it is about."""
    by_row: dict[str, str] = {}
    row = ""
    for panel in _dashboard()["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            inner = panel.get("panels") or []
        else:
            inner = [panel]
        for p in inner:
            by_row[row] = by_row.get(row, "") + " ".join(t["expr"] for t in p.get("targets", []))
    wanted = {
        "Run": [
            "swayscope_run_active",
            "swayscope_run_progress_ratio",
            "time() - ",
            "swayscope_run_start_time_seconds",
            "swayscope_probes_total",
        ],
        "Cache": [
            "swayscope_cache_hits_total",
            "swayscope_cache_misses_total",
            "swayscope_cache_entries",
            "swayscope_cache_bytes",
            "swayscope_cache_evictions_total",
        ],
        "Forward": [
            "swayscope_forward_calls_total",
            "swayscope_forward_prompts_total",
            "swayscope_tokens_total",
            "swayscope_batch_size_bucket",
            "swayscope_batch_size_sum",
            "swayscope_batch_size_count",
            "swayscope_forward_duration_seconds_bucket",
        ],
        "Disk cache": [
            "sum by (tier) (rate(swayscope_cache_hits_total",
            "swayscope_disk_cache_entries",
            "swayscope_disk_cache_bytes",
            "swayscope_disk_cache_evictions",
            "swayscope_disk_cache_write_failures_total",
        ],
        "Probes": [
            "swayscope_probe_duration_seconds{",
            "swayscope_probes_total",
        ],
        "Sweep": [
            "swayscope_sweep_progress_ratio{",
            "swayscope_sweep_adapter_progress_ratio{",
            "swayscope_probe_score{",
        ],
        "Worker $worker": [
            "swayscope_worker_up",
            "swayscope_worker_failures_total",
            "swayscope_worker_busy_seconds_total",
            "swayscope_worker_in_flight_calls",
            "swayscope_worker_forward_duration_seconds_bucket",
            "swayscope_worker_queue_wait_seconds_bucket",
            "swayscope_worker_tokens_total",
            "swayscope_worker_batch_size_sum",
            "swayscope_worker_batch_size_count",
            "swayscope_worker_memory_bytes",
            "swayscope_worker_device_memory_bytes",
        ],
        "Health": [
            "swayscope_exporter_errors_total",
            "swayscope_spans_dropped_total",
            "up{",
            "push_time_seconds{",
            "swayscope:run_stall_reason{",
        ],
    }
    for row_name, needles in wanted.items():
        for needle in needles:
            assert needle in by_row[row_name], f"row {row_name} does not query {needle}"


def test_one_row_per_worker() -> None:
    """The worker row repeats over the ``worker`` variable (the pool's workers), and each of
    its queries shows that worker only."""
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    worker = variables["worker"]
    assert worker["definition"].startswith("label_values(swayscope_worker_up{")
    assert worker["definition"].endswith(", worker)")
    assert worker["includeAll"] is True and worker["multi"] is True
    (row,) = [p for p in _panels() if p["type"] == "row" and p.get("repeat") == "worker"]
    assert row["title"] == dq.WORKER_ROW
    in_row = [
        (panel, target)
        for panel, target in _targets()
        if dq.row_of_panels(DASHBOARD_JSON)[panel["id"]] == dq.WORKER_ROW
    ]
    assert len({p["id"] for p, _ in in_row}) >= 6
    for panel, target in in_row:
        for selector in re.findall(r"swayscope_worker_[a-z_]+\{[^}]*\}", target["expr"]):
            assert 'worker=~"$worker"' in selector, (panel["title"], selector)
        assert "by (worker)" in target["expr"] or "by (le, worker)" in target["expr"]


def test_metric_names_are_the_contract() -> None:
    for panel, target in _targets():
        for name in re.findall(r"\bswayscope_[a-z0-9_]+\b", target["expr"]):
            assert name in CONTRACT, f"{panel['title']}: unknown metric {name}"


def test_every_selector_filters_job_and_instance() -> None:
    selector = re.compile(r"\b(swayscope_[a-z0-9_]+|up)\b(\{[^}]*\})?")
    for panel, target in _targets():
        expr = target["expr"]
        for match in selector.finditer(expr):
            name, matchers = match.group(1), match.group(2) or ""
            where = f"{panel['title']}: {name} in {expr}"
            assert 'job=~"$job"' in matchers, where
            assert 'instance=~"$instance"' in matchers, where


def test_rates_use_rate_interval() -> None:
    for panel, target in _targets():
        for window in re.findall(r"\[([^\]]*)\]", target["expr"]):
            assert window == "$__rate_interval", f"{panel['title']}: [{window}]"


def test_run_id_filter() -> None:
    """Panels outside Health are restricted to the selected run(s)."""
    row = ""
    checked = 0
    for panel in _panels():
        if panel["type"] == "row":
            row = panel["title"]
            continue
        if row == "Health":
            continue
        for target in panel["targets"]:
            assert 'run_id=~"$run_id"' in target["expr"], panel["title"]
            checked += 1
    assert checked > 10


def test_hit_ratio_is_guarded_against_idle() -> None:
    panels = [p for p in _panels() if p["title"].lower().startswith("cache hit ratio")]
    kinds = {p["type"] for p in panels}
    assert {"stat", "timeseries"} <= kinds
    for panel in panels:
        assert panel["fieldConfig"]["defaults"]["noValue"] == "no traffic"
        for target in panel["targets"]:
            # the denominator (lookups) is filtered with > 0: an idle window has no sample
            assert re.search(r">\s*0\s*\)\s*$", target["expr"]), target["expr"]
            assert "swayscope_cache_hits_total" in target["expr"]
            assert "swayscope_cache_misses_total" in target["expr"]


def test_eta_is_guarded() -> None:
    (panel,) = [p for p in _panels() if p["title"] == "ETA"]
    expr = panel["targets"][0]["expr"]
    assert "swayscope_run_progress_ratio" in expr and "> 0)" in expr


def test_latency_panels_have_exemplars() -> None:
    latency = [p for p in _panels() if "latency" in p["title"].lower()]
    quantiles: set[str] = set()
    for panel in latency:
        for target in panel["targets"]:
            assert target.get("exemplar") is True, panel["title"]
            assert "swayscope_forward_duration_seconds_bucket" in target["expr"]
            assert re.search(r"by \((le, op|op, le)\)", target["expr"]), target["expr"]
            quantiles.update(re.findall(r"histogram_quantile\(([0-9.]+)", target["expr"]))
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_batch_size_heatmap() -> None:
    (heatmap,) = [p for p in _panels() if p["type"] == "heatmap"]
    target = heatmap["targets"][0]
    assert target["format"] == "heatmap"
    assert "swayscope_batch_size_bucket" in target["expr"] and "by (le)" in target["expr"]


def test_dashboard_exprs_helper() -> None:
    exprs = dq.dashboard_exprs(DASHBOARD_JSON)
    assert len(exprs) == len(_targets())
    for expr in exprs:
        assert "$" not in expr, expr
        assert "[1m]" in expr or "[" not in expr
    assert any('job=~".*"' in e for e in exprs)
    assert dq.substitute('rate(x{job=~"${job:regex}"}[$__interval])') == ('rate(x{job=~".*"}[15s])')
    assert dq.substitute("$__range $run_id", {"run_id": "abc"}) == "5m abc"
    with pytest.raises(KeyError):
        dq.substitute("$unknown")


# --------------------------------------------------------------------------- provisioning


def _compose() -> dict[str, Any]:
    return _yaml(COMPOSE)  # type: ignore[no-any-return]


def test_datasources_provisioning() -> None:
    sources = {d["type"]: d for d in _yaml(DATASOURCES)["datasources"]}
    prom, jaeger = sources["prometheus"], sources["jaeger"]
    assert jaeger["url"] == "http://jaeger:16686"
    assert prom["url"] == "http://prometheus:9090"
    swayscope_job = next(
        j for j in _yaml(PROM_CONFIG)["scrape_configs"] if j["job_name"] == "swayscope"
    )
    assert prom["jsonData"]["timeInterval"] == swayscope_job["scrape_interval"] == "5s"
    (dest,) = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert dest["name"] == "trace_id"
    assert dest["datasourceUid"] == jaeger["uid"]


def test_dashboard_provider_points_at_the_mounted_dashboard() -> None:
    (provider,) = _yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    folder = provider["options"]["path"].rstrip("/")
    mounts = _compose()["services"]["grafana"]["volumes"]
    targets = [
        m.split(":")[1] for m in mounts if m.startswith("./dashboards/grafana/swayscope.json:")
    ]
    assert targets == [f"{folder}/swayscope.json"]


# --------------------------------------------------------------------------- prometheus


def test_prometheus_config() -> None:
    config = _yaml(PROM_CONFIG)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["swayscope"]["scrape_interval"] == "5s"
    assert jobs["swayscope"]["static_configs"][0]["targets"] == ["host.docker.internal:9464"]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["rule_files"]
    am = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]


def test_recording_rules() -> None:
    records = {r["record"]: r["expr"] for r in _rules() if "record" in r}
    assert "swayscope:cache_hit_ratio:rate5m" in records
    expr = records["swayscope:cache_hit_ratio:rate5m"]
    assert "sum by (job, instance)" in expr and "> 0" in expr


def test_alerts_are_complete() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    assert set(alerts) == ALERTS
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        assert url.startswith("docs/runbook.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{name}: no runbook section for {url}"
    records = {r["record"]: r["expr"] for r in _rules() if "record" in r}
    # The drop and the latency are measured against the run's own earlier level, never an
    # hour-old one.
    for alert, series in (
        ("SwayscopeCacheHitRateDrop", "swayscope:cache_hit_ratio:rate2m_in_run"),
        ("SwayscopeForwardLatencyHigh", "swayscope:forward_duration_seconds:p95_rate5m_in_run"),
    ):
        expr = alerts[alert]["expr"]
        assert "offset" not in expr and series in expr, alert
        assert "swayscope_run_active" in records[series] and "run_start" in records[series]
    # Stalled: a hung call ([10m] without forward calls), a vanished process
    # (last_over_time of run_active) and stopped pushes (push_time_seconds).
    assert alerts["SwayscopeRunStalled"]["expr"].strip() == "swayscope:run_stall_reason > 0"
    stall = records["swayscope:run_stall_reason"]
    for needle in ("swayscope_run_active", "[10m]", "last_over_time", "push_time_seconds"):
        assert needle in stall, needle
    loss = alerts["SwayscopeTelemetryLoss"]["expr"]
    assert "swayscope_exporter_errors_total" in loss and "swayscope_spans_dropped_total" in loss
    # Within minutes: a 1m window and for: 1m (it was 5m and 5m: 301 s to fire).
    assert "[1m]" in loss and alerts["SwayscopeTelemetryLoss"]["for"] == "1m"
    assert alerts["SwayscopeCacheHitRateDrop"]["for"] == "2m"


def test_rule_tests_cover_firing_and_quiet_cases() -> None:
    tests = _yaml(RULE_TESTS)["tests"]
    firing: set[str] = set()
    quiet: dict[str, int] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                firing.add(case["alertname"])
            else:
                quiet[case["alertname"]] = quiet.get(case["alertname"], 0) + 1
    assert firing == ALERTS
    for alert in ALERTS:
        # at least "does not fire" and "idle"
        assert quiet.get(alert, 0) >= 2, alert
    exprs = [c["expr"] for t in tests for c in t.get("promql_expr_test", [])]
    assert "swayscope:cache_hit_ratio:rate5m" in exprs


# --------------------------------------------------------------------------- compose & co


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {
        "prometheus",
        "alertmanager",
        "grafana",
        "jaeger",
        "pushgateway",
        "otel-collector",
    } <= set(services)
    assert services["otel-collector"]["profiles"] == ["collector"]
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2")
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    published = {p.split(":")[1] for s in services.values() for p in s.get("ports", [])}
    assert {"3000", "9090", "9093", "9091", "4317", "4318", "16686"} <= published
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source


def test_alertmanager_config_structure() -> None:
    config = _yaml(ALERTMANAGER)
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers


def test_collector_config_structure() -> None:
    config = _yaml(COLLECTOR)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind}.{name} is not defined"
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
