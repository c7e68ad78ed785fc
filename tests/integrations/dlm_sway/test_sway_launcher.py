"""``swayscope sway``: the opt-in, the hook, the shim and the run/probe scopes, against a stand-in.

The stand-in is a minimal package named ``dlm_sway`` with the module layout and call
pattern of dlm-sway 0.1.0 (its own instrumentation module, a runner that labels probes
with ``set_current_probe``, a backend that owns ``_inst``) and a ``sway`` script, run
by this test's Python: it checks the mechanism fast and everywhere. The same paths
against the real dlm-sway run in ``test_with_dlm_sway.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dlm_sway_testing import subprocess_env, swayscope_cmd
from exporter_servers import RotelAgent, wait_for

from swayscope.errors import ConfigError
from swayscope.instrumentation import prompt_hash
from swayscope.integrations.dlm_sway.environment import OWNER_ENV, TELEMETRY_ENV
from swayscope.integrations.dlm_sway.launcher import (
    child_environment,
    extra_requirements,
    find_sway,
    prepare_hook_dir,
)
from swayscope.integrations.dlm_sway.session import read_settings

STAND_IN = {
    "dlm_sway/__init__.py": '__version__ = "0.0.0-stand-in"\n',
    "dlm_sway/backends/__init__.py": "",
    "dlm_sway/backends/_instrumentation.py": '''
class BackendInstrumentation:
    """The stand-in's own: what runs without the opt-in."""
    def __init__(self, *, cache_maxsize=256, trace_path=None):
        self.cache = {}
    def set_current_probe(self, name):
        self.probe = name
    def cached(self, op, view_id, prompt, top_k, compute):
        key = (op, view_id, prompt, top_k)
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]
    def close(self):
        pass
''',
    "dlm_sway/suite/__init__.py": "",
    "dlm_sway/suite/runner.py": '''
from types import SimpleNamespace
from dlm_sway.backends._instrumentation import BackendInstrumentation

class Backend:
    def __init__(self):
        self._inst = BackendInstrumentation()
    def score(self, prompt):
        return self._inst.cached("next_token_dist", "base", prompt, 8, lambda: len(prompt))
    def close(self):
        self._inst.close()

class Probe:
    def run(self, spec, ctx):
        total = sum(ctx.backend.score(p) for p in spec.prompts)
        return SimpleNamespace(verdict=SimpleNamespace(value=spec.verdict), score=float(total),
                               message="")

def build_probe(raw):
    return Probe(), SimpleNamespace(**raw)

def run(spec, backend, *, spec_path="<memory>"):
    verdicts = []
    for raw in spec.suite:
        probe, probe_spec = build_probe(raw)
        backend._inst.set_current_probe(probe_spec.name)
        verdicts.append(probe.run(probe_spec, SimpleNamespace(backend=backend)).verdict.value)
    backend._inst.set_current_probe(None)
    return verdicts
''',
    "dlm_sway/cli.py": '''
import json, sys
from types import SimpleNamespace

def main():
    from dlm_sway.suite import runner
    print("loading model", flush=True)
    backend = runner.Backend()
    suite = [
        {"name": "first", "kind": "delta_kl", "prompts": ["a", "bb", "a"], "verdict": "pass"},
        {"name": "second", "kind": "delta_kl", "prompts": ["a", "ccc"], "verdict": "fail"},
    ]
    models = SimpleNamespace(ft=SimpleNamespace(base="stand-in-base", adapter="stand-in-lora"))
    verdicts = runner.run(SimpleNamespace(suite=suite, models=models), backend,
                          spec_path="suite.yaml")
    backend.close()
    print(json.dumps({"instrumentation": type(backend._inst).__module__, "verdicts": verdicts}))
    sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
''',
}


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """The stand-in's ``sway`` script."""
    root = tmp_path / "stand-in"
    for name, text in STAND_IN.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    script = root / "bin" / "sway"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
        "from dlm_sway.cli import main\nmain()\n"
    )
    script.chmod(0o755)
    return script


def sway(tmp_path: Path, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        swayscope_cmd("sway", "--sway", str(script), *args), capture_output=True, text=True,
        timeout=120, env=subprocess_env(tmp_path), cwd=tmp_path,
    )


def stdout_json(out: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_without_the_opt_in_dlm_sway_runs_untouched(tmp_path: Path, stand_in: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    prepare_hook_dir(hook)
    plain = subprocess_env(tmp_path)
    # The hook folder on the path alone changes nothing: the variable is the opt-in.
    for env in (plain, {**plain, "PYTHONPATH": f"{hook}{os.pathsep}{plain.get('PYTHONPATH', '')}"}):
        out = subprocess.run([str(stand_in)], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert stdout_json(out) == {
            "instrumentation": "dlm_sway.backends._instrumentation",
            "verdicts": ["pass", "fail"],
        }


def test_opt_in_gives_swayscope_instrumentation_scopes_and_sways_exit_code(
    tmp_path: Path, stand_in: Path, rotel_agent: RotelAgent
) -> None:
    trace = tmp_path / "t.jsonl"
    out = sway(tmp_path, stand_in, "--trace", str(trace), "--otlp-endpoint",
               rotel_agent.http_endpoint, "--", "3")
    assert out.returncode == 3, out.stderr
    assert stdout_json(out) == {
        "instrumentation": "swayscope.integrations.dlm_sway.shim",
        "verdicts": ["pass", "fail"],
    }
    assert "swayscope: telemetry of this sway run" in out.stderr and str(trace) in out.stderr
    lines = [json.loads(ln) for ln in trace.read_text().splitlines()]
    assert [(ln["probe"], ln["prompt_hash"], ln["hit"]) for ln in lines] == [
        ("first", prompt_hash("a"), False), ("first", prompt_hash("bb"), False),
        ("first", prompt_hash("a"), True), ("second", prompt_hash("a"), True),
        ("second", prompt_hash("ccc"), False),
    ]
    run_id = lines[0]["run_id"]
    assert {ln["run_id"] for ln in lines} == {run_id} and run_id in out.stderr

    def complete() -> list[object]:
        spans = rotel_agent.spans()
        return spans if sum(s.name == "swayscope.run" for s in spans) == 1 else []

    spans = wait_for(complete, 20.0)
    assert spans, rotel_agent.process.output()[-2000:]
    run = next(s for s in spans if s.name == "swayscope.run")
    probes = {s.attributes["swayscope.probe"]: s for s in spans if s.name == "swayscope.probe"}
    assert {p: s.attributes["swayscope.probe.status"] for p, s in probes.items()} == {
        "first": "pass", "second": "fail",
    }
    # each probe is the root of its own trace, linked to the run's
    assert all(
        s.parent_id == "" and [link.span_id for link in s.links] == [run.span_id]
        for s in probes.values()
    )
    forwards = [s for s in spans if s.name == "swayscope.forward"]
    assert len(forwards) == 3
    assert {s.parent_id for s in forwards} <= {s.span_id for s in probes.values()}
    assert {s.attributes["swayscope.run_id"] for s in (run, *probes.values())} == {run_id}


def test_the_otel_variables_reach_sway_as_they_reach_swayscope_run(
    tmp_path: Path, stand_in: Path, rotel_agent: RotelAgent
) -> None:
    env = {**subprocess_env(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": rotel_agent.http_endpoint}
    out = subprocess.run(
        swayscope_cmd("sway", "--sway", str(stand_in), "--"), capture_output=True, text=True,
        timeout=120, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert f"spans {rotel_agent.http_endpoint}/v1/traces" in out.stderr

    def runs() -> int:
        return sum(s.name == "swayscope.run" for s in rotel_agent.spans())

    assert wait_for(runs, 20.0) == 1, rotel_agent.process.output()[-2000:]


def test_a_port_in_use_stops_sway_before_its_model_loads(tmp_path: Path, stand_in: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = sway(tmp_path, stand_in, "--metrics-port", str(port), "--")
    assert out.returncode == 2
    assert "swayscope: error:" in out.stderr and "--metrics-port" in out.stderr
    assert "loading model" not in out.stdout


def test_a_library_dlm_sways_environment_lacks_is_named_with_that_environment(
    tmp_path: Path, stand_in: Path
) -> None:
    """dlm-sway's Python cannot import prometheus_client (swayscope's can): the error names
    dlm-sway's environment and what to install there, not swayscope's extra."""
    lacking = stand_in.with_name("sway-lacking")
    lines = stand_in.read_text().splitlines()
    lacking.write_text("\n".join([lines[0], "import sys",
                                  "sys.modules['prometheus_client'] = None", *lines[1:]]) + "\n")
    lacking.chmod(0o755)
    out = sway(tmp_path, lacking, "--metrics-port", "0", "--")
    assert out.returncode == 2 and "loading model" not in out.stdout, out.stderr
    assert "swayscope: error: --metrics-port needs the Python module prometheus_client, which " \
           f"dlm-sway's environment ({sys.prefix}) lacks" in out.stderr
    assert f"{sys.executable} -m pip install 'prometheus-client" in out.stderr
    assert "Install swayscope[prometheus]" not in out.stderr


def test_a_bad_flag_exits_2_before_sway_starts(tmp_path: Path, stand_in: Path) -> None:
    out = sway(tmp_path, stand_in, "--otlp-endpoint", "ftp://collector", "--")
    assert out.returncode == 2
    assert "--otlp-endpoint" in out.stderr and "'ftp://collector'" in out.stderr
    assert out.stdout == ""


def test_find_sway_refuses_a_missing_or_foreign_sway(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no `sway` on PATH"):
        find_sway(env={"PATH": str(tmp_path)})
    compositor = tmp_path / "sway"
    compositor.write_text("#!/bin/sh\necho wayland\n")
    compositor.chmod(0o755)
    with pytest.raises(ConfigError, match="not dlm-sway's sway"):
        find_sway(env={"PATH": str(tmp_path)})
    with pytest.raises(ConfigError, match="not an executable file"):
        find_sway(tmp_path / "nowhere")


def test_sway_dot_slash_runs_that_file_not_the_sway_on_path(
    tmp_path: Path, stand_in: Path
) -> None:
    """``--sway ./sway`` is the file in the current folder, even with another ``sway`` (the
    Wayland compositor, say) first on PATH; a missing one exits 2 with the flag named."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "sway").write_text(stand_in.read_text())
    (work / "sway").chmod(0o755)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "sway").write_text("#!/bin/sh\necho wayland compositor\n")
    (foreign / "sway").chmod(0o755)
    env = {**subprocess_env(tmp_path), "PATH": f"{foreign}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(swayscope_cmd("sway", "--sway", "./sway", "--"), capture_output=True,
                         text=True, timeout=120, env=env, cwd=work)
    assert run.returncode == 0, run.stderr
    assert "wayland" not in run.stdout and stdout_json(run)["verdicts"] == ["pass", "fail"]
    (work / "sway").unlink()
    env["PATH"] = str(tmp_path / "empty")
    gone = subprocess.run(swayscope_cmd("sway", "--sway", "./sway", "--"), capture_output=True,
                          text=True, timeout=120, env=env, cwd=work)
    assert gone.returncode == 2
    assert f"swayscope: error: --sway {str(work / 'sway')!r} is not an executable" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_the_child_alone_gets_the_hook(tmp_path: Path) -> None:
    env = {"PYTHONPATH": "/elsewhere", OWNER_ENV: "1", "HOME": "/h"}
    child = child_environment(tmp_path, {"trace": tmp_path / "t.jsonl", "metrics_port": None},
                              {"trace": "--trace"}, env)
    assert child["PYTHONPATH"] == f"{tmp_path}{os.pathsep}/elsewhere"
    payload = json.loads(child[TELEMETRY_ENV])
    assert payload == {
        "settings": {"trace": str(tmp_path / "t.jsonl")}, "sources": {"trace": "--trace"},
        "requirements": {"prometheus": extra_requirements("prometheus"),
                         "otel": extra_requirements("otel")},
    }
    assert any(r.startswith("prometheus-client") for r in payload["requirements"]["prometheus"])
    assert OWNER_ENV not in child and child["HOME"] == "/h"
    assert env == {"PYTHONPATH": "/elsewhere", OWNER_ENV: "1", "HOME": "/h"}


def test_a_subprocess_of_sway_leaves_the_metrics_endpoint_to_its_owner() -> None:
    given = json.dumps({"settings": {"metrics_port": 9464, "pushgateway": "http://gw:9091",
                                     "trace": "t.jsonl"}, "sources": {}})
    owner = read_settings({TELEMETRY_ENV: given})
    assert (owner.metrics_port, owner.pushgateway) == (9464, "http://gw:9091")
    other = read_settings({TELEMETRY_ENV: given, OWNER_ENV: str(os.getpid() + 1)})
    assert (other.metrics_port, other.pushgateway, other.trace) == (None, None, Path("t.jsonl"))


def test_the_hook_runs_the_sitecustomize_it_shadows(tmp_path: Path) -> None:
    hook, host = tmp_path / "hook", tmp_path / "host"
    hook.mkdir()
    host.mkdir()
    prepare_hook_dir(hook)
    marker = tmp_path / "host-ran"
    (host / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    env = {**subprocess_env(tmp_path), "PYTHONPATH": f"{hook}{os.pathsep}{host}",
           TELEMETRY_ENV: "{}"}
    code = "import sys; print(type(sys.meta_path[0]).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.stdout.strip() == "DlmSwayFinder" and marker.exists(), out.stderr


def test_a_python_that_cannot_import_swayscope_stops_with_exit_2(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    prepare_hook_dir(hook)
    (hook / "swayscope").unlink()
    (hook / "swayscope").mkdir()
    (hook / "swayscope" / "__init__.py").write_text("raise ImportError('pydantic is missing')\n")
    env = {**subprocess_env(tmp_path), "PYTHONPATH": str(hook), TELEMETRY_ENV: "{}"}
    out = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2 and "ran" not in out.stdout
    assert "swayscope: error: cannot import swayscope in this Python" in out.stderr
    assert "pydantic is missing" in out.stderr
