"""The core's part of checkpoint sweeps: the sweep scope and cache keys shared across
adapters for the views that do not depend on them (``key_model``)."""

from __future__ import annotations

import pytest
from sway_testing import Recorder

from swayscope.instrumentation import (
    BackendInstrumentation,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
)


def test_runs_inside_a_sweep_carry_its_id_and_the_sweep_counts_them() -> None:
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec])
    with inst.run(adapter="before"):
        pass
    with inst.sweep("sw1", adapters=["a", "b"], suite="s", base_model="m") as sweep:
        for adapter in ("a", "b"):
            with inst.run(adapter=adapter, run_id=f"run-{adapter}"):
                pass
            sweep.adapters_done += 1
    with inst.run(adapter="after"):
        pass
    started = [e for e in rec.events if isinstance(e, SweepStarted)]
    assert [(e.sweep_id, e.adapters, e.suite, e.base_model) for e in started] == [
        ("sw1", ("a", "b"), "s", "m")
    ]
    runs = [(e.adapter, e.sweep_id) for e in rec.events if isinstance(e, RunStarted)]
    assert runs == [("before", None), ("a", "sw1"), ("b", "sw1"), ("after", None)]
    (ended,) = [e for e in rec.events if isinstance(e, SweepEnded)]
    assert (ended.status, ended.adapters_done) == ("complete", 2)
    kinds = [type(e) for e in rec.events if isinstance(e, (SweepStarted, SweepEnded, RunEnded))]
    assert kinds == [RunEnded, SweepStarted, RunEnded, RunEnded, SweepEnded, RunEnded]


def test_an_interrupted_sweep_says_so() -> None:
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec])
    with pytest.raises(KeyboardInterrupt), inst.sweep("sw", adapters=["a"]):
        raise KeyboardInterrupt
    (ended,) = [e for e in rec.events if isinstance(e, SweepEnded)]
    assert ended.status == "interrupted"


def test_key_model_shares_entries_across_model_ids() -> None:
    inst = BackendInstrumentation(model_id="base|fp32@adapter-1")
    calls: list[str] = []

    def compute(tag: str) -> str:
        calls.append(tag)
        return tag

    assert inst.cached("op", "base", "p", 1, lambda: compute("b1"), key_model="base|fp32") == "b1"
    assert inst.cached("op", "ft", "p", 1, lambda: compute("f1")) == "f1"
    inst.model_id = "base|fp32@adapter-2"  # another adapter on the same base
    assert inst.cached("op", "base", "p", 1, lambda: compute("b2"), key_model="base|fp32") == "b1"
    assert inst.cached("op", "ft", "p", 1, lambda: compute("f2")) == "f2"
    got = inst.cached_batch(
        "op", "base", ["p", "q"], 1, lambda idx: [compute(f"q{i}") for i in idx],
        key_model="base|fp32",
    )
    assert got == ["b1", "q1"]
    assert calls == ["b1", "f1", "f2", "q1"]
