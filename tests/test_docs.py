"""The docs stay true: every python block of the README runs as written, and every number
the docs quote from a run is what ``bench/docs_numbers.py`` gets by running it now."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sway_testing import missing

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import docs_numbers as dn  # noqa: E402  (bench/ is not a package)

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

#: A python block of the README that cannot run here says why, on the line before it.
SKIP = re.compile(r"<!-- docs-test: skip \((.+?)\) -->\n$")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[tuple[int, str, str | None]]:
    """Each python block of the README: its line, its code, why it is skipped (or None)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        before = text[: m.start()]
        skip = SKIP.search(before)
        out.append((before.count("\n") + 1, m.group(1), skip.group(1) if skip else None))
    return out


def test_the_readme_has_python_blocks_and_few_are_skipped() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 2
    assert sum(1 for _, _, skip in blocks if skip) <= len(blocks) // 2


@pytest.mark.parametrize(("line", "code", "skip"), readme_blocks(),
                         ids=[f"README.md:{b[0]}" for b in readme_blocks()])
def test_each_readme_python_block_runs_as_written(
    tiny_model: TinyModelPaths, tmp_path: Path, line: int, code: str, skip: str | None
) -> None:
    """In a folder where the README's model paths (base-model/, lora-adapter/) are the tiny
    model's."""
    if skip:
        pytest.skip(f"README.md:{line}: {skip}")
    (tmp_path / "base-model").symlink_to(tiny_model.base_dir, target_is_directory=True)
    (tmp_path / "lora-adapter").symlink_to(tiny_model.adapter_dir, target_is_directory=True)
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, f"README.md:{line} failed:\n{out.stderr[-3000:]}"


def test_every_marker_names_a_section_and_every_section_is_in_the_docs() -> None:
    shown = {found.name for found in dn.marked()}
    assert shown <= set(dn.SECTIONS), shown - set(dn.SECTIONS)
    assert set(dn.SECTIONS) <= shown, set(dn.SECTIONS) - shown
    for doc in dn.DOCS:
        text = doc.read_text(encoding="utf-8")
        opened = len(re.findall(r"<!-- docs-numbers: [\w-]+ -->", text))
        assert opened == text.count("<!-- /docs-numbers -->") == len(
            [f for f in dn.marked((doc,))]
        ), doc


def test_a_varying_value_matches_anything_and_a_fixed_one_only_itself() -> None:
    block = ["calls: 21 · wall time: ", dn.Varying("0.22"), " s\n|  a  |  b |\n"]
    rx = dn.pattern(block)
    assert rx.fullmatch("calls: 21 · wall time: 9.75 s\n| a | b |\n")
    assert rx.fullmatch("calls: 21 ·\nwall time: 0.1 s\n|   a |  b |\n")  # wrapped, re-padded
    assert not rx.fullmatch("calls: 27 · wall time: 0.22 s\n| a | b |\n")
    assert not rx.fullmatch("calls: 21 · wall time: 0.22 s\n| a | c |\n")


def test_a_block_of_padded_columns_that_drifted_is_told_at_once() -> None:
    # A table whose columns sit between varying values: a regex with two runs of \s+ side
    # by side backtracked through every split of the padding (CI spent 30 min on one).
    row = ["| probe  ", dn.Varying("0.37s"), "  ", " pass   ", dn.Varying("2"), "     |\n"]
    block = row * 40 + ["new footer line\n"]
    text = "| probe      0.41s     pass        3     |\n" * 40 + "old footer\n"
    start = time.perf_counter()
    assert dn.pattern(block).fullmatch(text) is None
    assert dn.pattern(block[:-1]).fullmatch(text.replace("old footer\n", ""))
    assert time.perf_counter() - start < 1.0


def test_write_keeps_the_docs_own_value_where_this_script_measures_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("x <!-- docs-numbers: t -->21 calls in 3.5 s, run 1a<!-- /docs-numbers --> y\n")
    monkeypatch.setattr(dn, "DOCS", (doc,))
    monkeypatch.setattr(dn, "REPO", tmp_path)
    block = ["23 calls in ", dn.Varying(), " s, run ", dn.Varying("2b")]
    assert dn.write({"t": block}) == ["doc.md: t"]
    assert doc.read_text() == "x <!-- docs-numbers: t -->23 calls in 3.5 s, run 2b" \
                              "<!-- /docs-numbers --> y\n"


@pytest.mark.timeout(1800)
def test_the_docs_numbers_have_not_drifted(tmp_path: Path) -> None:
    """The cheap sections rerun (tiny model, one thread); a drift names the doc, the line and
    the difference. To regenerate: python bench/docs_numbers.py --write."""
    cheap = [name for name, s in dn.SECTIONS.items() if s.cheap and not s.timing]
    drifts, skipped = dn.check(cheap, tmp_path)
    assert not drifts, "the docs drifted from a run of the current code (regenerate them: " \
        "python bench/docs_numbers.py --write):\n" + "\n".join(
            f"{d.where}: {d.name}\n{d.diff}" for d in drifts)
    if skipped:
        missing("; ".join(f"{name}: {why}" for name, why in skipped.items()),
                "the docs-numbers sections that need them")
