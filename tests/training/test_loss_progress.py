"""The training progress bar: steps and loss, live on a terminal, log lines otherwise."""

from __future__ import annotations

import logging

import pytest

from swayscope.training.progress import LOG_LINES, loss_progress


def test_without_a_terminal_a_few_log_lines_carry_step_and_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO), loss_progress(20, "training X", live=False) as on_step:
        for step in range(1, 21):
            on_step(step, 5.0 - step / 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == LOG_LINES
    assert lines[-1].startswith("training X: step 20/20, loss 3.000")


def test_live_bar_shows_the_loss(capsys: pytest.CaptureFixture[str]) -> None:
    with loss_progress(3, "training Y", live=True) as on_step:
        for step in (1, 2, 3):
            on_step(step, 2.5)
    err = capsys.readouterr().err
    assert "training Y" in err and "3/3" in err and "loss 2.500" in err
