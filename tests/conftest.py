"""Session fixtures shared by the test folders: the tiny offline model, built once.

Nothing here imports torch at collection time, so torch-free tests still run where the
``hf`` extra is not installed (a test that asks for the tiny model then skips).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

# No model downloads, ever: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


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
