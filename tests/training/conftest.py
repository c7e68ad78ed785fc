"""One tiny base model per test session for the training tests (built offline in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama base model folder (seed 0)."""
    from swayscope.backends.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0).base_dir
