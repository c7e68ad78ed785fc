"""Run without the dev extra, the tests say what to install (not an import error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: A plugin that makes this Python look as if it lacked the ``rotel`` package.
WITHOUT_ROTEL = """\
import importlib.metadata as metadata

_version = metadata.version


def version(name):
    if name == "rotel":
        raise metadata.PackageNotFoundError(name)
    return _version(name)


metadata.version = version
"""


def test_pytest_without_the_dev_extra_names_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "without_rotel.py").write_text(WITHOUT_ROTEL)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "without_rotel", "-q", "tests/ops"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
    )
    said = out.stdout + out.stderr
    assert out.returncode == 4, said
    assert f"the tests need swayscope's dev extra in this Python ({sys.executable}), which " \
           "lacks rotel" in said
    assert f"{sys.executable} -m pip install -e '.[dev]'" in said
    assert "Traceback" not in said and "passed" not in said
