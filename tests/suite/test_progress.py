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


def test_in_a_sweep_lines_name_their_adapter_and_follow_their_run_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sweep's runs may be live at once: each monitor logs its own run's probes, named by
    its adapter."""
    mine, other = RunMonitor(1, live=False, run_id="mine"), RunMonitor(1, live=False)
    inst = BackendInstrumentation(exporters=[mine, other])
    with (
        caplog.at_level(logging.INFO, logger="swayscope"),
        inst.sweep("s", adapters=["step-2", "step-4"]),
    ):
        with inst.run(adapter="step-4", run_id="theirs", total_probes=1), inst.probe("p"):
            inst.cached("next_token_dist", "ft", "x", 8, lambda: 1.0)
        with inst.run(adapter="step-2", run_id="mine", total_probes=1), inst.probe("p"):
            inst.cached("next_token_dist", "ft", "y", 8, lambda: 1.0)
    ended = [r.getMessage() for r in caplog.records if " in " in r.getMessage()]
    assert len(ended) == 2
    assert ended[0].startswith("step-4: probe 1/1 p: pass in ")
    assert ended[1].startswith("step-2: probe 1/1 p: pass in ")
    assert mine.forward_calls == other.forward_calls == 1
    assert other.run_id == "theirs"  # the first run it saw start
