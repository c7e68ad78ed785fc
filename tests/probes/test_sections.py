"""The training document: markdown headings and the .dlm grammar, read into typed sections;
``dlm_source`` in a suite spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from swayscope.errors import SpecError
from swayscope.probes.sections import (
    QAPair,
    SectionPreference,
    load_document,
    parse_document,
)
from swayscope.suite.spec import load_suite, load_suite_text

DATA = Path(__file__).parent / "data"


def test_markdown_headings_start_prose_sections_and_fences_type_the_rest() -> None:
    doc = load_document(DATA / "keeper.md")
    assert [(s.kind, s.tag) for s in doc.sections] == [
        ("prose", "The lamp"),
        ("prose", "The garden"),
        ("prose", "The storm"),
        ("instruction", None),
        ("preference", None),
    ]
    lamp = doc.sections[0]
    assert lamp.content.startswith("# The lamp\nAt dusk the keeper")
    assert lamp.label == "The lamp"
    assert doc.sections[3].pairs == (
        QAPair("What did the keeper light at dusk?", "The great lamp at the top of the tower."),
        QAPair("Where did the keeper store the potatoes?",
               "In a dry cellar under the kitchen floor."),
    )
    assert doc.sections[4].preferences == (
        SectionPreference("During a storm the keeper should", "keep the lamp burning all night.",
                          "go to bed early."),
        SectionPreference("A lighthouse lamp should be", "bright and steady.",
                          "dim and flickering."),
    )
    assert doc.source == str(DATA / "keeper.md")
    assert doc.text.startswith("# The lamp") and "### Q" in doc.text
    assert [s.kind for s in doc.of_kinds(("instruction", "preference"))] == [
        "instruction", "preference"
    ]


def test_a_dlm_document_skips_its_frontmatter_and_keeps_prose_whole() -> None:
    doc = load_document(DATA / "keeper.dlm")
    assert [s.kind for s in doc.sections] == ["prose", "instruction", "preference"]
    prose = doc.sections[0]
    assert prose.tag is None
    assert prose.content.startswith("# The lamp") and "# The storm" in prose.content
    assert "dlm_id" not in doc.text
    assert len(doc.sections[1].pairs) == 2 and len(doc.sections[2].preferences) == 2


def test_fences_in_code_blocks_suffixes_unknown_kinds_and_ids() -> None:
    text = (
        "Intro.\n\n# A\nalpha\n```\n# not a heading\n::instruction::\n```\n"
        "::instruction#tutor::\n### Q\nq?\n### A\na.\n"
        '::image path="fig.png" alt="a figure"::\na caption\n'
        "::prose::\n# B\nbeta\n"
    )
    doc = parse_document(text)
    assert [(s.kind, s.tag) for s in doc.sections] == [
        ("prose", None), ("prose", "A"), ("instruction", None), ("prose", "B")
    ]
    assert "::instruction::" in doc.sections[1].content
    assert doc.sections[2].pairs == (QAPair("q?", "a."),)
    again = parse_document(text)
    assert [s.id for s in again.sections] == [s.id for s in doc.sections]
    assert len({s.id for s in doc.sections}) == 4
    assert all(len(s.id) == 16 for s in doc.sections)
    # a heading inside an instruction section does not close it
    inside = parse_document("::instruction::\n### Q\n# x\nq?\n### A\na.\n")
    assert [s.kind for s in inside.sections] == ["instruction"]


def test_documents_that_cannot_be_used_say_why(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_document(tmp_path / "missing.md")
    blank = tmp_path / "blank.md"
    blank.write_text("\n\n   \n")
    with pytest.raises(SpecError, match="no section with text"):
        load_document(blank)


SPEC = """\
version: 1
models:
  kind: dummy
dlm_source: {source}
suite:
  - kind: delta_kl
"""


def test_dlm_source_is_read_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "keeper.md").write_text((DATA / "keeper.md").read_text())
    spec = tmp_path / "suite.yaml"
    spec.write_text(SPEC.format(source="docs/keeper.md"))
    loaded = load_suite(spec)
    assert loaded.spec.dlm_source == tmp_path / "docs" / "keeper.md"
    assert loaded.document is not None and len(loaded.document.sections) == 5
    assert load_suite_text(SPEC.format(source=DATA / "keeper.dlm")).document is not None
    assert load_suite_text(GOOD_WITHOUT).document is None


GOOD_WITHOUT = "version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n"


def test_a_missing_document_names_the_spec_line(tmp_path: Path) -> None:
    spec = tmp_path / "suite.yaml"
    spec.write_text(SPEC.format(source="nowhere.md"))
    where = r"suite\.yaml:4: dlm_source: .*nowhere\.md.*does not exist"
    with pytest.raises(SpecError, match=where):
        load_suite(spec)
