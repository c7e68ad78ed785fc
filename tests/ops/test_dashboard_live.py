"""Live check of the operations kit: a real Prometheus, loaded with our rules, scrapes a
real suite run (the demo suite on the tiny model) and, through a real Pushgateway, the
same run's pushes; every PromQL expression of the Grafana dashboard returns data, and
the hit-ratio recording rule equals the run's BackendStats.hit_rate.

Locally a missing server binary skips with a message; with ``CI`` set it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dashboard_queries as dq
import ops_servers as srv
import pytest


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[srv.Processes]:
    procs = srv.Processes()
    yield procs
    procs.stop_all()


#: Rows without data in a run of its own, without a pool of workers (tests/backends/ray
#: checks the worker and sweep rows against a live sweep on a pool).
NOT_IN_A_PLAIN_RUN = (dq.WORKER_ROW, dq.SWEEP_ROW)


def test_every_dashboard_query_returns_data_and_the_recording_rule_equals_the_hit_rate(
    tmp_path: Path, servers: srv.Processes
) -> None:
    pytest.importorskip("transformers")
    from swayscope.backends.tiny import build_tiny
    from swayscope.instrumentation import BackendInstrumentation, Event, Exporter, RunStarted
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
    from swayscope.suite.demo import demo_suite_yaml
    from swayscope.suite.runner import build_backend, run_suite
    from swayscope.suite.spec import load_suite_text

    paths = build_tiny(tmp_path / "tiny", seed=0)
    loaded = load_suite_text(demo_suite_yaml(paths.base_dir, paths.adapter_dir), "demo")
    pushgateway = srv.start_pushgateway(servers, tmp_path)
    exporter = PrometheusExporter(port=0, first_scrape_wait_s=30.0)
    assert exporter.port is not None
    prom = srv.start_prometheus(
        servers, tmp_path, targets=[f"127.0.0.1:{exporter.port}"], pushgateway=pushgateway
    )
    # The same run is also pushed: the dashboard shows pushed runs as it shows scraped ones.
    pusher = PrometheusExporter(pushgateway_url=pushgateway, push_interval_s=0.5)
    scraped = f'job="swayscope", instance="127.0.0.1:{exporter.port}"'
    pushed = f'job="swayscope", instance="{pusher.push_instance}"'

    class PushedStartSeen(Exporter):
        """What --metrics-wait does for a scraped run, for the pushed one: at run start,
        push the zeroed series and wait until Prometheus has them, so rate() over the
        pushed series sees the run's increments however short the run is."""

        def export(self, event: Event) -> None:
            if isinstance(event, RunStarted):
                pusher.push()
                srv.wait_until(
                    lambda: prom.scalar(f"swayscope_run_active{{{pushed}}}") == 1, 30,
                    "Prometheus to scrape the pushed run's zeroed series",
                )

    inst = BackendInstrumentation(exporters=[exporter, pusher, PushedStartSeen()])
    try:
        backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
        result = run_suite(loaded, backend, live_progress=False)
        assert result.status == "complete", result.to_dict()
        stats = inst.stats

        # Prometheus has the final values, scraped and pushed, once run_active is back to
        # 0 and the forward-call total matches.
        def final_values() -> bool:
            return all(
                prom.scalar(f"swayscope_run_active{{{where}}}") == 0
                and prom.scalar(f"sum(swayscope_forward_calls_total{{{where}}})")
                == stats.forward_calls
                for where in (scraped, pushed)
            )

        srv.wait_until(final_values, 30, "Prometheus to have the run's final values")

        # The recording rule, evaluated after that scrape, equals the run's hit rate:
        # every series started at 0 (zeroed at run start, scraped before traffic).
        ratio = f"swayscope:cache_hit_ratio:rate5m{{{scraped}}}"

        def rule_settled() -> float | None:
            value = prom.scalar(ratio)
            ok = value is not None and abs(value - stats.hit_rate) < 1e-9
            return value if ok else None

        try:
            srv.wait_until(rule_settled, 15, "the recording rule to equal the hit rate")
        except AssertionError:
            pytest.fail(f"{ratio} = {prom.scalar(ratio)}, BackendStats.hit_rate = {stats.hit_rate}")
        assert 0 < stats.hit_rate < 1

        # Every dashboard expression returns data: with match-all variables and with
        # the run's own run_id selected.
        for values in (None, {"job": "swayscope", "run_id": result.run_id}):
            empty = [
                f"{title} [{ref}]: {expr}"
                for title, ref, expr in dq.dashboard_exprs_by_panel(
                    values=values, except_rows=NOT_IN_A_PLAIN_RUN
                )
                if not prom.query(expr)
            ]
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        # ... and every panel shows the scraped instance and the pushed one on their own
        # (a panel's scraped-only or pushed-only query may be empty for the other).
        for instance in (f"127.0.0.1:{exporter.port}", pusher.push_instance):
            values = {"job": "swayscope", "instance": instance, "run_id": result.run_id}
            with_data: dict[str, bool] = {}
            for title, _ref, expr in dq.dashboard_exprs_by_panel(
                values=values, except_rows=NOT_IN_A_PLAIN_RUN
            ):
                with_data[title] = with_data.get(title, False) or bool(prom.query(expr))
            empty_panels = [title for title, ok in with_data.items() if not ok]
            assert not empty_panels, f"panels without data for {instance}: {empty_panels}"

        # Latency panels show exemplars that carry a trace id only when OTel is on;
        # here the exemplar storage answers, and the bucket series exist.
        assert prom.query("swayscope_forward_duration_seconds_bucket")
        # The run_id template variable resolves to this run.
        assert result.run_id in prom.label_values("run_id")
    finally:
        inst.close()
