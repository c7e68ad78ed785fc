"""docs/ARCHITECTURE.md stays the map: its module index names every module under src/, and
nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "swayscope"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
TOP_LEVEL = "(top level)"


def indexed() -> set[str]:
    """Module paths (relative to the package) the doc's "Module index" table names."""
    section = DOC.read_text(encoding="utf-8").split("## Module index", 1)[1]
    found: set[str] = set()
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`")
        prefix = "" if folder == TOP_LEVEL else folder
        found.update(prefix + name for name in re.findall(r"`([^`]+\.py)`", cells[2]))
    return found


def on_disk() -> set[str]:
    return {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
    }


def test_every_module_is_in_the_architecture_map() -> None:
    assert "## Module index" in DOC.read_text(encoding="utf-8")
    missing, gone = on_disk() - indexed(), indexed() - on_disk()
    assert not missing, f"modules not in docs/ARCHITECTURE.md's Module index: {sorted(missing)}"
    assert not gone, f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(gone)}"


def test_the_map_names_no_module_that_is_gone() -> None:
    """Every `path/module.py` the prose mentions exists, in the package or the repository (a
    rename leaves no stale name)."""
    text = DOC.read_text(encoding="utf-8").split("## Module index", 1)[0]
    named = set(re.findall(r"`((?:[a-z_]+/)+[a-z_0-9]+\.py)`", text))
    stale = [
        n for n in named
        if not (PACKAGE / n).exists() and not (ROOT / n).exists()
        and not any(PACKAGE.glob(f"**/{n}"))
    ]
    assert not stale, f"docs/ARCHITECTURE.md names files that do not exist: {sorted(stale)}"
