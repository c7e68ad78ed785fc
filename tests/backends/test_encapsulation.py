"""No backend module reaches into another object's underscored attributes.

A view talks to its backend through a public interface (``RecordSource``), and
library objects (PEFT layers, tokenizers) are used through their public API; this
keeps both true as the modules change.
"""

from __future__ import annotations

import ast
from pathlib import Path

import swayscope.backends

BACKENDS = Path(swayscope.backends.__file__).parent


def _foreign_private_access(source: str) -> list[tuple[int, str]]:
    """(line, name) of every ``obj._name`` whose ``obj`` is not ``self``/``cls`` (dunders pass)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append((node.lineno, name))
    return found


def test_backend_modules_use_only_public_attributes_of_others() -> None:
    modules = sorted(BACKENDS.rglob("*.py"))
    assert BACKENDS / "hf" / "views.py" in modules, "the hf package is scanned"
    found = [
        f"{path.relative_to(BACKENDS)}:{line}: .{name}"
        for path in modules
        for line, name in _foreign_private_access(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_check_flags_a_reach_into_another_object() -> None:
    source = (
        "class V:\n"
        "    def f(self, b):\n"
        "        b.x.__class__\n"
        "        return b._compute(self._x, self.layer._disable_adapters)\n"
    )
    assert _foreign_private_access(source) == [(4, "_compute"), (4, "_disable_adapters")]
