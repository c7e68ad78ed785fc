"""``swayscope run sway.yaml`` and ``swayscope convert`` end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from dlm_sway_testing import (
    SWAYSCOPE_KINDS,
    VERDICTS,
    subprocess_env,
    swayscope_cmd,
    write_sway_suite,
)


def run(cmd: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env(tmp_path),
        cwd=tmp_path,
    )


def test_swayscope_runs_a_dlm_sway_suite_as_is(
    sway_suite: Path, swayscope_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]
) -> None:
    spec, (out, result) = sway_suite, swayscope_run
    assert [(p["name"], p["kind"]) for p in result["probes"]] == list(SWAYSCOPE_KINDS.items())
    assert {p["verdict"] for p in result["probes"]} <= VERDICTS
    assert result["status"] == "complete" and result["suite"] == "sway"
    by = {p["name"]: p for p in result["probes"]}
    assert by["calibration"]["evidence"]["seeds"] == [1000, 1001, 1002]
    assert {"dk_prose", "dk_code"} <= set(by["calibration"]["evidence"]["calibrated"])
    assert by["collapse"]["evidence"]["context_tokens"] == [0, 16, 64]
    assert f"{spec} is a dlm-sway 0.1.0 suite" in out.stderr
    assert "swayscope: note: " in out.stderr and "runs as perplexity_shift" in out.stderr


def test_convert_prints_and_writes_the_swayscope_spec(tmp_path: Path) -> None:
    spec = write_sway_suite(tmp_path, tmp_path / "m" / "base", tmp_path / "m" / "lora")
    printed = run(swayscope_cmd("convert", str(spec)), tmp_path, timeout=60)
    assert printed.returncode == 0, printed.stderr
    data = yaml.safe_load(printed.stdout)
    assert data["models"]["base"] == str(tmp_path / "m" / "base")
    assert [p["kind"] for p in data["suite"]] == list(SWAYSCOPE_KINDS.values())
    out = tmp_path / "out" / "suite.yaml"
    written = run(swayscope_cmd("convert", str(spec), "-o", str(out)), tmp_path, timeout=60)
    assert written.returncode == 0 and written.stdout == "", written.stderr
    assert yaml.safe_load(out.read_text())["models"]["adapter"] == "../m/lora"


def test_a_suite_that_cannot_run_as_is_exits_2_and_leaves_nothing(tmp_path: Path) -> None:
    spec = write_sway_suite(tmp_path, tmp_path, tmp_path)
    spec.write_text(spec.read_text() + "  - name: leaks\n    kind: leakge\n")
    line = len(spec.read_text().splitlines())
    result = tmp_path / "r.json"
    for cmd in (("run", str(spec), "--json", str(result)), ("convert", str(spec))):
        out = run(swayscope_cmd(*cmd), tmp_path, timeout=60)
        assert out.returncode == 2, out.stderr
        assert f"{spec}:{line}: suite.6.kind" in out.stderr and "'leakge'" in out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
    assert not result.exists()
