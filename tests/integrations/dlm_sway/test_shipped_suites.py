"""dlm-sway's four shipped suites — the pre-commit example, the pytest example, the
determinism golden spec and the README's "Full suite" — run under ``swayscope run`` with
their model paths pointed at the tiny model: every probe translated, none refused, none
an error. The README's suite names a small training document (``dlm_source``) for its
section probes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dlm_sway_testing import dlm_sway_sdist, dlm_sway_venv, subprocess_env, swayscope_cmd

from swayscope.backends.tiny import TinyModelPaths

DOCUMENT = Path(__file__).parents[2] / "probes" / "data" / "keeper.md"
SUITES = {
    "precommit": "examples/precommit-example/sway.yaml",
    "pytest_integration": "examples/pytest_integration/sway.yaml",
    "golden": "tests/golden/spec.yaml",
    "readme_full_suite": "README.md",
}


def readme_full_suite(readme: str) -> str:
    """The YAML block under the README's "Full suite" heading."""
    section = readme.split("## Full suite", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Full suite has no yaml block"
    return match.group(1)


def with_models(text: str, tiny: TinyModelPaths) -> dict[str, Any]:
    """The suite with every model path pointed at the tiny model and its adapter."""
    data: dict[str, Any] = yaml.safe_load(text)
    for block in data["models"].values():
        block["base"] = str(tiny.base_dir)
        if "adapter" in block:
            block["adapter"] = str(tiny.adapter_dir)
    data["models"]["ft"]["adapter"] = str(tiny.adapter_dir)
    return data


@pytest.mark.parametrize("name", list(SUITES))
def test_a_shipped_dlm_sway_suite_runs_every_probe(
    name: str, tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    root = dlm_sway_sdist(dlm_sway_venv())
    source = (root / SUITES[name]).read_text(encoding="utf-8")
    if name == "readme_full_suite":
        source = readme_full_suite(source)
    data = with_models(source, tiny_model)
    if name == "readme_full_suite":
        data["dlm_source"] = str(DOCUMENT)
    spec = tmp_path / "sway.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    result = tmp_path / "result.json"
    run = subprocess.run(
        swayscope_cmd("run", str(spec), "--json", str(result)), cwd=tmp_path,
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]
    assert "cannot run as is" not in run.stderr
    probes = json.loads(result.read_text())["probes"]
    assert [p["name"] for p in probes] == [e["name"] for e in data["suite"]]
    for probe in probes:
        assert probe["verdict"] in ("pass", "fail", "warn"), probe
