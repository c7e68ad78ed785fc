"""Fixtures for the probe tests: the small training document in ``data/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from swayscope.probes.sections import TrainingDocument, load_document

DATA = Path(__file__).parent / "data"


@pytest.fixture
def keeper() -> TrainingDocument:
    """A small training document: three prose sections, Q/A pairs, preference triples."""
    return load_document(DATA / "keeper.md")
