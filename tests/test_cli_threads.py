"""``--threads`` and ``defaults.threads`` above the CPUs: exit 2 with a clear message naming
the flag or the spec's line and the value, before any model loads (issue 22); the report
says how the count was chosen (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sway_testing import DUMMY_SPEC, swayscope, write_spec

from swayscope.backends.threads import usable_cpus

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

MESSAGE = f"more than the {usable_cpus()} CPU(s) this process may use"


@pytest.mark.parametrize("value", ["20000", "12345678901234567890", str(usable_cpus() + 1)])
def test_a_thread_count_above_the_cpus_is_refused_naming_the_flag(
    tmp_path: Path, value: str
) -> None:
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--threads", value)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("swayscope: error: --threads: ")
    assert MESSAGE in out.stderr and f"(got {value})" in out.stderr
    assert f"give at most {usable_cpus()}" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_thread_count_above_the_cpus_in_the_spec_names_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "suite.yaml"
    text = DUMMY_SPEC.format(strength=1.0, latency=0.0)
    spec.write_text(text.replace("\nsuite:\n", "\ndefaults:\n  threads: 20000\nsuite:\n"))
    line = spec.read_text().splitlines().index("  threads: 20000") + 1
    out = swayscope(tmp_path, "run", str(spec))
    assert out.returncode == 2, out.stderr
    assert f"suite.yaml:{line}: defaults.threads: {MESSAGE}" in out.stderr
    assert "(got 20000)" in out.stderr and "Traceback" not in out.stderr


def test_a_thread_count_the_machine_has_runs(tmp_path: Path) -> None:
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--threads",
                    str(usable_cpus()))
    assert out.returncode == 0, out.stderr


def test_the_report_says_how_the_count_was_chosen(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    from swayscope.suite.demo import demo_suite_yaml

    spec = tmp_path / "suite.yaml"
    spec.write_text(demo_suite_yaml(tiny_model.base_dir, tiny_model.adapter_dir))
    n = usable_cpus()
    for args, count, reason in (
        ((), n, f"the {n} CPU(s) this process may use"),
        (("--threads", "1"), 1, "set"),
    ):
        out = swayscope(tmp_path, "run", str(spec), "--json", "r.json", *args)
        assert out.returncode == 0, out.stderr
        result = json.loads((tmp_path / "r.json").read_text())
        assert (result["threads"], result["threads_reason"]) == (count, reason)
        assert f"threads: {count} ({reason})" in " ".join(out.stdout.split())
