"""The run report's footer: where the telemetry went, said as what it was during the run."""

from __future__ import annotations

from swayscope.suite.report import footer_lines, render_markdown
from swayscope.suite.result import SuiteResult


def test_the_metrics_line_says_the_endpoint_was_served_during_the_run() -> None:
    result = SuiteResult(run_id="r1", suite="s",
                         telemetry={"metrics_url": "http://127.0.0.1:9464/metrics"})
    assert "metrics: served at http://127.0.0.1:9464/metrics during the run" in footer_lines(result)
    assert "- metrics: served at http://127.0.0.1:9464/metrics during the run" in render_markdown(
        result
    )
