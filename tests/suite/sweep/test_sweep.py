"""``swayscope sweep``: the suite on five checkpoints of the tiny adapter, end to end.

One sweep (module fixture) serves the checks of its summary, its result files, its JSONL
trace and its counters; the faults (an adapter that does not load, Ctrl-C) each run a
sweep of their own on fewer checkpoints.
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sweep_testing import STEPS, SUITE, Sweep, sweep
from typer.testing import CliRunner

from swayscope.cli import app
from swayscope.suite.sweep.plots import SPARK_UNICODE

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

LABELS = [f"step-{s:05d}" for s in STEPS]


def test_checkpoints_run_in_step_order_and_delta_kl_grows_at_each(five: Sweep) -> None:
    s = five.summary
    assert s["status"] == "complete" and s["order"] == "step"
    assert [a["label"] for a in s["adapters"]] == LABELS
    assert [a["step"] for a in s["adapters"]] == list(STEPS)
    assert all(a["status"] == "complete" for a in s["adapters"])
    delta = five.curve("delta_kl")
    scores = [p["score"] for p in delta]
    assert scores[0] == 0.0 and delta[0]["verdict"] == "fail"  # step 0: lora_B = 0
    assert all(a < b for a, b in itertools.pairwise(scores)), scores
    assert delta[-1]["verdict"] == "pass"
    # Step 0 fails delta_kl: a probe failed, so the sweep's exit code is 1.
    assert five.exit_code == s["exit_code"] == 1, five.output


def test_base_view_forward_passes_are_computed_once_for_the_whole_sweep(five: Sweep) -> None:
    total = five.summary["backend_stats"]
    per_adapter = [five.row(label)["backend_stats"] for label in LABELS]
    first = per_adapter[0]
    assert first["base_forward_passes"] > 0 and first["base_forward_calls"] > 0
    assert total["base_forward_passes"] == first["base_forward_passes"]
    assert total["base_forward_calls"] == first["base_forward_calls"]
    for stats in per_adapter[1:]:
        assert stats["base_forward_passes"] == stats["base_forward_calls"] == 0
        # ...while the fine-tuned views are computed for every adapter
        assert stats["forward_passes"] > 0
    # Every later adapter asked for the base view and was served from the cache.
    base_lines = [json.loads(line) for line in five.trace.read_text().splitlines()]
    base_lines = [x for x in base_lines if x["view_kind"] == "base"]
    later = [x for x in base_lines if x["adapter"] != LABELS[0]]
    assert {x["adapter"] for x in later} == set(LABELS[1:])
    assert all(x["hit"] for x in later)
    # So the sweep's hit rate is above the first adapter's (its base lookups were misses).
    assert total["hit_rate"] > first["hit_rate"]
    assert "shared, computed once" in five.output


def test_one_result_json_per_adapter_and_trace_lines_name_their_adapter(five: Sweep) -> None:
    files = sorted((five.out / "adapters").iterdir())
    assert [f.name for f in files] == [f"{i + 1:02d}-{label}.json" for i, label in
                                       enumerate(LABELS)]
    run_ids = []
    for label, path in zip(LABELS, files, strict=True):
        result = json.loads(path.read_text())
        assert result["models"]["adapter"] == label
        assert result["status"] == "complete"
        assert five.row(label)["result_file"] == str(path)
        assert five.row(label)["run_id"] == result["run_id"]
        run_ids.append(result["run_id"])
    assert len(set(run_ids)) == len(LABELS)
    lines = [json.loads(line) for line in five.trace.read_text().splitlines()]
    assert {(x["run_id"], x["adapter"]) for x in lines} == set(zip(run_ids, LABELS, strict=True))


def test_summary_table_and_plots_on_the_terminal_and_in_markdown(five: Sweep) -> None:
    out = five.output
    assert "verdict score (z) per adapter" in out
    assert "score per checkpoint, step 0 → 8" in out
    for label in LABELS:
        assert label in out
    spark = next(line for line in out.splitlines() if line.strip().startswith("delta_kl ")).split()
    curve = spark[1]
    assert len(curve) == len(STEPS)
    levels = [SPARK_UNICODE.index(c) for c in curve]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == len(SPARK_UNICODE) - 1
    md = (five.out / "sweep.md").read_text()
    assert "| adapter | step | delta_kl | perplexity_shift | hit | note |" in md
    assert "| step-00000 | 0 | fail 0 | " in md
    assert f"| delta_kl | `{curve}` |" in md
    html = (five.out / "sweep.html").read_text()
    assert html.count('<figure class="probe"') == 2 and 'id="plot1-line"' in html


def _corrupt_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    return dst


def test_an_adapter_that_fails_to_load_is_an_error_row_and_the_sweep_goes_on(
    checkpoints: Path, sweep_spec: Path, five: Sweep, tmp_path: Path
) -> None:
    broken_first = _corrupt_copy(checkpoints / "step-00002", tmp_path / "broken-first")
    broken_middle = _corrupt_copy(checkpoints / "step-00002", tmp_path / "broken-middle")
    not_an_adapter = tmp_path / "notes"
    not_an_adapter.mkdir()
    s = sweep(
        sweep_spec, tmp_path, str(broken_first), str(checkpoints / "step-00004"),
        str(broken_middle), str(not_an_adapter), str(checkpoints / "step-00008"),
    )
    assert s.summary["order"] == "given"  # some names carry no step
    status = {a["label"]: a["status"] for a in s.summary["adapters"]}
    assert status == {
        "broken-first": "error", "step-00004": "complete", "broken-middle": "error",
        "notes": "error", "step-00008": "complete",
    }
    assert "cannot attach adapter" in s.row("broken-middle")["error"]
    assert "has no adapter_config.json" in s.row("notes")["error"]
    assert s.exit_code == 2, s.output
    assert sorted(p.name for p in (s.out / "adapters").iterdir()) == [
        "02-step-00004.json", "05-step-00008.json"
    ]
    # After a failed load (first: found before the base loaded; middle: the swap undone),
    # the adapters that did load give exactly the scores of the clean sweep.
    for label in ("step-00004", "step-00008"):
        got = next(p for p in s.curve("delta_kl") if p["adapter"] == label)
        want = next(p for p in five.curve("delta_kl") if p["adapter"] == label)
        assert got["score"] == pytest.approx(want["score"], rel=1e-9)
    assert "not loaded" in (s.out / "sweep.md").read_text()


def test_the_base_loads_once_however_many_adapters_fail_first(
    checkpoints: Path, sweep_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken adapters before the first good one (unreadable weights, a rank that does not
    match its weights, no adapter config) are found without loading the base: one load
    (there were three for two broken adapters and a good one)."""
    from swayscope.backends.hf import loading

    corrupt = _corrupt_copy(checkpoints / "step-00002", tmp_path / "corrupt")
    other_rank = tmp_path / "other-rank"
    shutil.copytree(checkpoints / "step-00002", other_rank)
    config = json.loads((other_rank / "adapter_config.json").read_text())
    config["r"] *= 2
    (other_rank / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "notes").mkdir()
    loads: list[str] = []
    real = loading.model_class

    def counted(base_path: Path, gguf_file: str | None) -> Any:
        cls = real(base_path, gguf_file)

        class Counted:
            @staticmethod
            def from_pretrained(*args: Any, **kwargs: Any) -> Any:
                loads.append(str(args[0]))
                return cls.from_pretrained(*args, **kwargs)

        return Counted

    monkeypatch.setattr(loading, "model_class", counted)
    s = sweep(sweep_spec, tmp_path, str(corrupt), str(other_rank), str(tmp_path / "notes"),
              str(checkpoints / "step-00004"))
    assert [a["status"] for a in s.summary["adapters"]] == ["error"] * 3 + ["complete"]
    assert "size mismatch" in s.row("other-rank")["error"]
    assert len(loads) == 1, loads


def test_ctrl_c_keeps_the_finished_adapters_results_and_writes_the_summary(
    checkpoints: Path, tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swayscope.probes.delta_kl import DeltaKLProbe

    run = DeltaKLProbe.run

    def ctrl_c_on_the_third(self: DeltaKLProbe, ctx: Any) -> Any:
        if ctx.backend.adapter_name == "step-00004":
            raise KeyboardInterrupt
        return run(self, ctx)

    monkeypatch.setattr(DeltaKLProbe, "run", ctrl_c_on_the_third)
    spec = tmp_path / "suite.yaml"  # the adapters from the spec's sweep: block this time
    spec.write_text(
        SUITE.format(base=tiny_model.base_dir).replace(
            "suite:\n",
            f"sweep:\n  adapters: [{json.dumps(str(checkpoints / 'step-*'))}]\nsuite:\n",
        )
    )
    s = sweep(spec, tmp_path)
    assert s.exit_code == 2, s.output
    assert s.summary["status"] == "interrupted"
    status = [a["status"] for a in s.summary["adapters"]]
    assert status == ["complete", "complete", "interrupted", "not_run", "not_run"]
    files = sorted(p.name for p in (s.out / "adapters").iterdir())
    assert files == ["01-step-00000.json", "02-step-00002.json", "03-step-00004.json"]
    for name in files[:2]:
        assert json.loads((s.out / "adapters" / name).read_text())["status"] == "complete"
    partial = json.loads((s.out / "adapters" / files[2]).read_text())
    assert partial["status"] == "interrupted"
    assert partial["not_run"] == ["delta_kl", "perplexity_shift"]
    finished = [p["score"] for p in s.curve("delta_kl")][:2]
    assert finished[0] == 0.0 and finished[1] > 0
    assert (s.out / "sweep.md").is_file() and (s.out / "sweep.html").is_file()
    assert "sweep interrupted" in (s.out / "sweep.md").read_text()


def test_the_readmes_sweep_section_runs_as_written(
    tiny_model: TinyModelPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first ``sh`` block, line by line, in an empty folder (the tiny model copied in
    first, as ``tiny-model`` would build it: that saves the build, not the training)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Sweeping checkpoints\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["swayscope", "tiny-model"], ["swayscope", "sweep"]]
    shutil.copytree(tiny_model.base_dir.parent, tmp_path / commands[0][2])
    monkeypatch.chdir(tmp_path)
    for command in commands:
        res = CliRunner().invoke(app, command[1:], env={"COLUMNS": "160"})
        assert res.exit_code in (0, 1), res.output  # 1: step 0 (lora_B = 0) fails probes
    out = tmp_path / commands[1][commands[1].index("--out") + 1]
    summary = json.loads((out / "sweep.json").read_text())
    assert [a["step"] for a in summary["adapters"]] == [0, 5, 10, 20, 40]
    assert all(a["status"] == "complete" for a in summary["adapters"])
    assert (out / "sweep.html").read_text().count('<figure class="probe"') == 5
