"""Fixtures for the dlm-sway integration tests: the tiny model (offline), a dlm-sway suite on
it run once by ``swayscope run``, a real OTLP receiver."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dlm_sway_testing import dlm_sway_venv, subprocess_env, swayscope_cmd, write_sway_suite

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny Llama + LoRA adapter (seed 0)."""
    for module in ("torch", "transformers", "peft", "tokenizers", "safetensors"):
        pytest.importorskip(module)
    from swayscope.backends.tiny import build_tiny

    root: Path = tmp_path_factory.mktemp("tiny-model")
    return build_tiny(root, seed=0)


@pytest.fixture(scope="session")
def sway_venv() -> Path:
    """dlm-sway's venv; skips (locally) or fails (CI) without one. Ask for it first, so a
    test that needs dlm-sway skips before anything else is set up."""
    return dlm_sway_venv()


@pytest.fixture(scope="session")
def sway_suite(tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``SWAY_SUITE`` on the tiny model, in a folder of its own."""
    return write_sway_suite(
        tmp_path_factory.mktemp("sway-suite"), tiny_model.base_dir, tiny_model.adapter_dir
    )


@pytest.fixture(scope="session")
def swayscope_run(sway_suite: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``swayscope run sway.yaml --json`` once: the process and its result JSON."""
    folder = sway_suite.parent
    out = subprocess.run(
        swayscope_cmd("run", str(sway_suite), "--json", str(folder / "ours.json")),
        capture_output=True, text=True, timeout=240, env=subprocess_env(folder), cwd=folder,
    )
    assert out.returncode in (0, 1), out.stderr
    return out, json.loads((folder / "ours.json").read_text())


# The real OTLP receiver of the exporter tests (rotel-agent, stopped at teardown), reused as is.
_EXPORTER_TESTS = Path(__file__).resolve().parents[2] / "instrumentation" / "exporters"
sys.path.insert(0, str(_EXPORTER_TESTS))
_spec = importlib.util.spec_from_file_location("exporter_fixtures", _EXPORTER_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_exporter_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_exporter_fixtures)
servers = _exporter_fixtures.servers
rotel_agent = _exporter_fixtures.rotel_agent
