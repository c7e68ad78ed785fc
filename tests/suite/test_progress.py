"""RunMonitor: progress from the same events every exporter sees."""

from __future__ import annotations

import logging

import pytest

from swayscope.instrumentation import BackendInstrumentation
from swayscope.suite.progress import RunMonitor


def test_plain_progress_lines_name_probe_calls_elapsed_and_eta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = RunMonitor(2, live=False)
    inst = BackendInstrumentation(exporters=[monitor])
    with caplog.at_level(logging.INFO, logger="swayscope"), inst.run(total_probes=2):
        for name in ("first", "second"):
            with inst.probe(name) as p:
                inst.cached_batch("next_token_dist", "base", [name, name + "!"], 8,
                                  lambda idx: [1.0] * len(idx))
                p.status = "pass"
    ended = [r.getMessage() for r in caplog.records if "pass in" in r.getMessage()]
    assert len(ended) == 2
    assert ended[0].startswith("probe 1/2 first: pass in ")
    assert "1 forward calls" in ended[0] and "ETA" in ended[0]
    assert ended[1].startswith("probe 2/2 second: pass in ") and "2 forward calls" in ended[1]
    assert monitor.done == 2 and monitor.forward_calls == 2


def test_live_bar_starts_and_stops_without_a_terminal() -> None:
    monitor = RunMonitor(1, live=True)
    inst = BackendInstrumentation(exporters=[monitor])
    with inst.run(total_probes=1), inst.probe("only"):
        inst.cached("next_token_dist", "ft", "x", 8, lambda: 1.0)
    assert monitor.forward_calls == 1 and monitor.done == 1
    monitor.shutdown()
    assert monitor._progress is None
