"""The training tests' base model: the session's tiny model (top-level conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths


@pytest.fixture(scope="session")
def tiny_base(tiny_model: TinyModelPaths) -> Path:
    """The tiny Llama base model folder (seed 0)."""
    return tiny_model.base_dir
