"""Fixtures for the torch backends: one tiny offline model per session, a fresh backend per test.

Nothing here imports torch at collection time, so the torch-free tests in this
folder (the dummy backend's) still run where the ``hf`` extra is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from swayscope.backends.hf import HFBackend
    from swayscope.backends.tiny import TinyModelPaths

# No model downloads, ever: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _need_hf() -> None:
    for module in ("torch", "transformers", "peft", "tokenizers", "safetensors"):
        pytest.importorskip(module)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny Llama + LoRA adapter, built once per test session (seed 0)."""
    _need_hf()
    from swayscope.backends.tiny import build_tiny

    root: Path = tmp_path_factory.mktemp("tiny-model")
    return build_tiny(root, seed=0)


@pytest.fixture
def hf_backend(tiny_model: TinyModelPaths) -> Iterator[HFBackend]:
    """A fresh backend (empty cache, zeroed stats) on the tiny model, CPU float32."""
    from swayscope.backends.hf import HFBackend

    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
    try:
        yield backend
    finally:
        backend.close()
