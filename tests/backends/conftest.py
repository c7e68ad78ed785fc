"""Fixtures for the torch backends: a fresh backend per test on the session's tiny model
(``tiny_model``, from the top-level conftest).

Nothing here imports torch at collection time, so the torch-free tests in this
folder (the dummy backend's) still run where the ``hf`` extra is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from swayscope.backends.hf import HFBackend
    from swayscope.backends.tiny import TinyModelPaths


@pytest.fixture
def hf_backend(tiny_model: TinyModelPaths) -> Iterator[HFBackend]:
    """A fresh backend (empty cache, zeroed stats) on the tiny model, CPU float32."""
    from swayscope.backends.hf import HFBackend

    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
    try:
        yield backend
    finally:
        backend.close()
