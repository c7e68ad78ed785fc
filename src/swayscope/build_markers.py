"""The marker a built folder carries (the tiny model, the SmolLM2 float32 copy, the demo's
adapters): what it was built from, read back to decide whether to build it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker's JSON object; None when it is missing, unreadable or not an object (the
    folder is then built again)."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


__all__ = ["read_marker"]
