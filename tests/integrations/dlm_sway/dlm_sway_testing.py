"""Helpers for the dlm-sway integration tests: suites in dlm-sway's format, and where dlm-sway is.

dlm-sway lives in its own venv (its pins must not touch ours): ``.ci/run`` builds
``.venv-dlm-sway`` at the repository root and extracts dlm-sway's sdist tests
into it; ``SWAYSCOPE_DLM_SWAY_VENV`` points elsewhere. Without it, the tests that
need dlm-sway skip with a message, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from sway_testing import missing

from swayscope.integrations.dlm_sway.suite_format import DLM_SWAY_VERSION

REPO = Path(__file__).resolve().parents[2]
VENV_ENV = "SWAYSCOPE_DLM_SWAY_VENV"
DEFAULT_VENV = REPO / ".venv-dlm-sway"

#: A dlm-sway suite over every probe kind swayscope maps, one kind repeated under two
#: names, on the tiny model; ``{base}``/``{adapter}`` are filled in.
SWAY_SUITE = """\
version: 1
models:
  base:
    kind: hf
    base: {base}
    dtype: fp32
    device: cpu
  ft:
    kind: hf
    base: {base}
    adapter: {adapter}
    dtype: fp32
    device: cpu
defaults:
  seed: 0
  top_k: 64
suite:
  - name: calibration
    kind: null_adapter
    runs: 3
    cache: false
  - name: dk_prose
    kind: delta_kl
    prompts: ["The capital of France is", "Once upon a time", "The quick brown fox",
              "Water boils at"]
  - name: dk_code
    kind: delta_kl
    prompts: ["def fibonacci(n):", "import numpy as np"]
  - name: ablation
    kind: adapter_ablation
    prompts: ["The capital of France is", "Once upon a time"]
  - name: collapse
    kind: prompt_collapse
    prompts: ["The capital of France is", "Once upon a time"]
    context_lengths: [0, 16, 64]
  - name: prose_ppl
    kind: external_perplexity
    max_chunks: 4
"""
#: The swayscope probe kind each entry of SWAY_SUITE runs as.
SWAYSCOPE_KINDS = {
    "calibration": "null_adapter",
    "dk_prose": "delta_kl",
    "dk_code": "delta_kl",
    "ablation": "adapter_ablation",
    "collapse": "prompt_collapse",
    "prose_ppl": "perplexity_shift",
}
VERDICTS = {"pass", "fail", "warn", "skip", "error"}


def write_sway_suite(folder: Path, base: Path, adapter: Path, text: str = SWAY_SUITE) -> Path:
    path = folder / "sway.yaml"
    path.write_text(text.format(base=json.dumps(str(base)), adapter=json.dumps(str(adapter))))
    return path


def _missing(message: str) -> None:
    missing(message, "the dlm-sway integration tests")


def dlm_sway_venv() -> Path:
    """The venv holding dlm-sway; skips (locally) or fails (CI) without one."""
    venv = Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)
    sway = venv / "bin" / "sway"
    if not sway.is_file():
        _missing(
            f"dlm-sway {DLM_SWAY_VERSION} is not installed in {venv} (no bin/sway): run "
            f"bash .ci/run once, or set {VENV_ENV} to a venv with "
            f"'dlm-sway[hf,pytest]=={DLM_SWAY_VERSION}' and swayscope's otel and prometheus "
            "dependencies"
        )
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import dlm_sway, sys; sys.stdout.write(dlm_sway.__version__)"],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode != 0 or probe.stdout != DLM_SWAY_VERSION:
        _missing(
            f"{venv} does not hold dlm-sway {DLM_SWAY_VERSION} "
            f"({probe.stdout or probe.stderr.strip()[-300:]})"
        )
    return venv


def dlm_sway_sdist_tests(venv: Path) -> Path:
    """dlm-sway's own tests (from its sdist), extracted next to the venv by ``.ci/run``."""
    tests = venv / "sdist" / f"dlm_sway-{DLM_SWAY_VERSION}" / "tests"
    if not (tests / "unit" / "test_backend_instrumentation.py").is_file():
        _missing(f"dlm-sway's sdist tests are not in {tests}: run bash .ci/run once")
    return tests


#: The suites dlm-sway 0.1.0 ships: files of its sdist, and its README's "Full suite" block.
SDIST_SUITES = (
    "examples/precommit-example/sway.yaml",
    "examples/pytest_integration/sway.yaml",
    "tests/golden/spec.yaml",
    "README.md#full-suite",
)


def sdist_suite(sdist: Path, name: str) -> str:
    """The text of one of :data:`SDIST_SUITES` in the extracted sdist ``sdist``."""
    path, _, section = name.partition("#")
    text = (sdist / path).read_text(encoding="utf-8")
    if not section:
        return text
    block = re.search(r"^## Full suite\n\n```yaml\n(.*?)^```", text, re.S | re.M)
    assert block is not None, f"no yaml block under '## Full suite' in {sdist / path}"
    return block.group(1)


def with_models(text: str, base: Path, adapter: Path) -> str:
    """A dlm-sway suite with its model paths (every ``base:`` and ``adapter:`` of its model
    blocks) replaced by ``base`` and ``adapter``, and nothing else changed."""
    models = yaml.safe_load(text)["models"]
    given = {
        block[key]: str(base if key == "base" else adapter)
        for block in models.values()
        for key in ("base", "adapter")
        if key in block
    }
    for old in sorted(given, key=len, reverse=True):  # "x-adapter" before "x"
        text = text.replace(old, given[old])
    return text


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a spawned swayscope or sway: offline, no OTEL_* of the caller."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SWAYSCOPE_SWAY_"))
    }
    env.update(
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        COLUMNS="200",
        SWAYSCOPE_HOME=str(tmp_path / "home"),
    )
    return env


def swayscope_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "swayscope", *args]
