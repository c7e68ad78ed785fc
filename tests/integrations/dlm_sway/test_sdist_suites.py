"""dlm-sway 0.1.0's own suites (the three files its sdist ships and its README's "Full suite"),
model paths changed to the tiny model and nothing else, through ``swayscope run`` and
``swayscope convert``: what runs, what is skipped and why, and ``--strict``. The README's
suite is also given a small training document (``dlm_source``), so that its section
probes run instead of skipping for want of one.

An entry runs when swayscope has its kind (as a mapped kind, or a probe of the same name);
else it is a ``skip`` saying that swayscope has no probe for it yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from dlm_sway_testing import (
    SDIST_SUITES,
    VERDICTS,
    dlm_sway_sdist_tests,
    sdist_suite,
    with_models,
)
from typer.testing import CliRunner, Result

from swayscope.cli import app
from swayscope.integrations.dlm_sway.suite_format import kind_rules

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

#: Each suite's entries in order: (name, dlm-sway kind).
ENTRIES = {
    "examples/precommit-example/sway.yaml": [("dk", "delta_kl")],
    "examples/pytest_integration/sway.yaml": [
        ("null", "null_adapter"), ("adherence", "delta_kl"), ("calibration", "calibration_drift"),
    ],
    "tests/golden/spec.yaml": [("dk_golden", "delta_kl"), ("cal_golden", "calibration_drift")],
    "README.md#full-suite": [
        ("null_baseline", "null_adapter"), ("doc_divergence", "delta_kl"),
        ("section_attribution", "section_internalization"), ("no_leakage", "leakage"),
        ("ablation_shape", "adapter_ablation"),
    ],
}
#: The training document the README's suite is given.
DOCUMENT = Path(__file__).parents[2] / "probes" / "data" / "keeper.md"
#: Suites whose base model block names an adapter, which dlm-sway ignores (differential).
BASE_ADAPTER = {"examples/precommit-example/sway.yaml", "tests/golden/spec.yaml"}


@pytest.fixture(scope="module")
def suites(
    sway_venv: Path, tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The four suites, copied from the sdist with the tiny model's paths."""
    sdist = dlm_sway_sdist_tests(sway_venv).parent
    folder = tmp_path_factory.mktemp("sdist-suites")
    out = {}
    for i, name in enumerate(SDIST_SUITES):
        path = folder / f"{i}-{Path(name.partition('#')[0]).parent.name or 'readme'}.yaml"
        text = with_models(sdist_suite(sdist, name), tiny_model.base_dir,
                           tiny_model.adapter_dir)
        if name == "README.md#full-suite":
            text += f"dlm_source: {DOCUMENT}\n"
        path.write_text(text)
        out[name] = path
    return out


def swayscope(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def unsupported(kind: str) -> bool:
    return kind_rules(kind) is None


def kind_line(path: Path, name: str, kind: str) -> int:
    """Line of the ``kind:`` of the entry called ``name`` in the suite file."""
    lines = list(enumerate(path.read_text().splitlines(), 1))
    start = next(i for i, ln in lines if f"name: {name}" in ln or f'name: "{name}"' in ln)
    return next(i for i, ln in lines[start - 1:] if "kind:" in ln and kind in ln)


def test_the_four_files_match_what_this_test_expects(suites: dict[str, Path]) -> None:
    for name, path in suites.items():
        entries = yaml.safe_load(path.read_text())["suite"]
        assert [(e["name"], e["kind"]) for e in entries] == ENTRIES[name], name


@pytest.mark.parametrize("name", SDIST_SUITES)
def test_run_runs_what_swayscope_has_and_skips_the_rest_saying_why(
    suites: dict[str, Path], name: str, tmp_path: Path
) -> None:
    path, out = suites[name], tmp_path / "result.json"
    res = swayscope("run", str(path), "--json", str(out))
    result: dict[str, Any] = json.loads(out.read_text())
    assert res.exit_code == result["exit_code"] and res.exit_code in (0, 1), res.output
    assert result["status"] == "complete"
    got = [(p["name"], p["kind"], p["verdict"], p["message"]) for p in result["probes"]]
    assert [(n, k) for n, k, _, _ in got] == [
        (n, "perplexity_shift" if k == "external_perplexity" else k) for n, k in ENTRIES[name]
    ]
    for probe, kind, verdict, message in got:
        if unsupported(kind):
            assert verdict == "skip", probe
            assert message.startswith(f"swayscope has no probe for dlm-sway's kind {kind!r} "
                                      "yet; nearest: "), message
            assert f"skip: {path}:{kind_line(path, probe, kind)}: {probe} ({kind})" in res.output
        else:
            assert verdict in VERDICTS and verdict not in ("error", "skip"), (probe, message)
    notes = "\n".join(result["notes"])
    assert ("models.base.adapter: ignored, as dlm-sway ignores it in differential mode"
            in notes) is (name in BASE_ADAPTER)
    assert any(unsupported(k) for _, k in ENTRIES[name]) is (
        "--strict refuses a suite with entries swayscope cannot run" in res.output
    )


@pytest.mark.parametrize("name", SDIST_SUITES)
def test_strict_refuses_a_suite_with_entries_swayscope_cannot_run(
    suites: dict[str, Path], name: str, tmp_path: Path
) -> None:
    path, out = suites[name], tmp_path / "result.json"
    refused = [(n, k) for n, k in ENTRIES[name] if unsupported(k)]
    for command in (["run", str(path), "--json", str(out)], ["convert", str(path)]):
        res = swayscope(*command, "--strict")
        if not refused:
            assert res.exit_code in (0, 1), res.output
            continue
        assert res.exit_code == 2, res.output
        assert "--strict refuses such entries" in res.output
        for probe, kind in refused:
            assert f"{path}:{kind_line(path, probe, kind)}: " in res.output
            assert f"'{kind}'" in res.output
        assert "Traceback" not in res.output
    assert out.exists() is not refused


@pytest.mark.parametrize("name", SDIST_SUITES)
def test_convert_writes_a_spec_with_each_skipped_entry_commented_out_saying_why(
    suites: dict[str, Path], name: str, tmp_path: Path
) -> None:
    path, spec = suites[name], tmp_path / "suite.yaml"
    res = swayscope("convert", str(path), "-o", str(spec))
    assert res.exit_code == 0, res.output
    text = spec.read_text()
    converted = yaml.safe_load(text)
    assert [p["name"] for p in converted["suite"]] == [
        n for n, k in ENTRIES[name] if not unsupported(k)
    ]
    for probe, kind in ENTRIES[name]:
        if unsupported(kind):
            line = kind_line(path, probe, kind)
            said = f"# Not converted ({path}:{line}):\n#   swayscope has no probe"
            assert said in text and f"# - name: {probe}\n#   kind: {kind}\n" in text
            assert f"not converted, kept as a comment: {path}:" in res.output
    run = swayscope("run", str(spec))
    assert run.exit_code in (0, 1) and "is a dlm-sway" not in run.output, run.output
