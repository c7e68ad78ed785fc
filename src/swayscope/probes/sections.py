"""The training document, read into typed sections: what the section probes score.

A suite names its training document with ``dlm_source`` (dlm-sway's key). Two formats:

- **A ``.dlm`` document** (the DocumentLanguageModel format dlm-sway reads): an optional
  YAML frontmatter between ``---`` lines, then a body that fence lines split into
  sections. A fence is a line holding only ``::instruction::`` or ``::preference::``
  (``::prose::`` too; a ``#adapter`` suffix inside the fence is ignored); it opens a
  section that runs to the next fence or the end. Text before the first fence is one
  prose section. Fences inside a triple-backtick code block are text. An instruction
  section holds ``### Q`` / ``### A`` pairs, a preference section ``### Prompt`` /
  ``### Chosen`` / ``### Rejected`` triples. Other fences (``::image ...::``) open a
  section that is left out (there is no text to score). A heading inside an instruction
  or preference section does not close it.
- **Anything else is markdown**: each heading line (``#`` to ``######``, outside code
  blocks) starts a prose section, tagged with the heading's text; text before the first
  heading is a section of its own. The fences above work here too.

Blank sections are dropped. Each section's id is the first 16 hex digits of the SHA-256
of its kind and text, so it stays the same while the section does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from swayscope.errors import SpecError

SectionKind = Literal["prose", "instruction", "preference"]
SECTION_KINDS: tuple[SectionKind, ...] = get_args(SectionKind)
_KINDS: dict[str, SectionKind] = {k: k for k in SECTION_KINDS}

#: What a probe that needs the training document says when the suite names none.
NO_DOCUMENT = (
    "no training document: set dlm_source at the top of the suite (a markdown file, each "
    "heading a section, or a .dlm document)"
)

_FENCE = re.compile(r"^\s*::([a-z]+)(?:#[^:\s]*)?(?:\s[^:]*)?::\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_MARKER = re.compile(r"^\s*###\s+(Q|A|Prompt|Chosen|Rejected)\s*$")


@dataclass(frozen=True, slots=True)
class QAPair:
    """A question and its answer from an instruction section."""

    prompt: str
    gold: str


@dataclass(frozen=True, slots=True)
class SectionPreference:
    """A prompt, the preferred answer and the rejected one, from a preference section."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True, slots=True)
class Section:
    """One typed part of the training document."""

    id: str
    kind: SectionKind
    content: str
    tag: str | None = None
    """The heading that opened it (markdown), or None."""
    pairs: tuple[QAPair, ...] = ()
    """Instruction sections: their question/answer pairs."""
    preferences: tuple[SectionPreference, ...] = ()
    """Preference sections: their triples."""

    @property
    def label(self) -> str:
        """How evidence names the section: its tag, else its kind and id."""
        return self.tag or f"{self.kind} {self.id}"


@dataclass(frozen=True, slots=True)
class TrainingDocument:
    """The training document, split into sections."""

    source: str
    """Where it was read from (a path), for messages."""
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """Every section's text, blank-line separated: the document as a style reference."""
        return "\n\n".join(s.content for s in self.sections)

    def of_kinds(self, kinds: Sequence[SectionKind]) -> list[Section]:
        return [s for s in self.sections if s.kind in kinds]


def _section_id(kind: str, content: str) -> str:
    return hashlib.sha256(f"{kind}\n{content}".encode()).hexdigest()[:16]


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """``### Marker`` blocks of a fenced section body: (marker, its lines)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        match = _MARKER.match(line)
        if match:
            blocks.append((match.group(1), []))
        elif blocks:
            blocks[-1][1].append(line)
    return blocks


def _pairs(lines: list[str]) -> tuple[QAPair, ...]:
    out: list[QAPair] = []
    question: str | None = None
    for marker, body in _blocks(lines):
        text = "\n".join(body).strip()
        if marker == "Q":
            question = text
        elif marker == "A" and question and text:
            out.append(QAPair(question, text))
            question = None
    return tuple(out)


def _triples(lines: list[str]) -> tuple[SectionPreference, ...]:
    out: list[SectionPreference] = []
    current: dict[str, str] = {}
    for marker, body in _blocks(lines):
        if marker == "Prompt":
            current = {}
        current[marker] = "\n".join(body).strip()
        if marker == "Rejected" and all(current.get(k) for k in ("Prompt", "Chosen", "Rejected")):
            out.append(SectionPreference(current["Prompt"], current["Chosen"], current["Rejected"]))
            current = {}
    return tuple(out)


def _section(fence: str, lines: list[str], tag: str | None) -> Section | None:
    content = "\n".join(lines).strip()
    kind = _KINDS.get(fence)
    if kind is None or not content:
        return None
    return Section(
        id=_section_id(kind, content),
        kind=kind,
        content=content,
        tag=tag,
        pairs=_pairs(lines) if kind == "instruction" else (),
        preferences=_triples(lines) if kind == "preference" else (),
    )


def _body(text: str) -> list[str]:
    """The lines after a leading ``---`` frontmatter block (all lines when there is none)."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                return lines[i + 1 :]
    return lines


def parse_document(text: str, *, source: str = "<document>", dlm: bool = False) -> TrainingDocument:
    """``text`` as a :class:`TrainingDocument`: the ``.dlm`` grammar when ``dlm``, else
    markdown (see the module docstring)."""
    lines = _body(text) if dlm else text.splitlines()
    sections: list[Section] = []
    kind = "prose"
    tag: str | None = None
    current: list[str] = []
    in_code = False

    def close() -> None:
        section = _section(kind, current, tag)
        if section is not None:
            sections.append(section)

    for line in lines:
        if line.lstrip().startswith("```"):
            in_code = not in_code
        fence = None if in_code else _FENCE.match(line)
        heading = None if in_code or dlm or kind != "prose" else _HEADING.match(line)
        if fence:
            close()
            kind, tag, current = fence.group(1), None, []
        elif heading:
            close()
            tag, current = heading.group(2) or None, [line]
        else:
            current.append(line)
    close()
    return TrainingDocument(source=source, sections=tuple(sections))


def load_document(path: Path) -> TrainingDocument:
    """Read and parse the training document at ``path`` (``.dlm``: its grammar; else
    markdown); :class:`SpecError` when it cannot be read or has no section."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            f"dlm_source: training document {str(path)!r} does not exist; check the path "
            "(relative paths are resolved against the spec file's folder)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"dlm_source: cannot read training document {str(path)!r}: {exc}") from exc
    doc = parse_document(text, source=str(path), dlm=path.suffix == ".dlm")
    if not doc.sections:
        raise SpecError(
            f"dlm_source: training document {str(path)!r} has no section with text; give a "
            "markdown file with headings or a .dlm document"
        )
    return doc


__all__ = [
    "NO_DOCUMENT",
    "SECTION_KINDS",
    "SectionPreference",
    "QAPair",
    "Section",
    "SectionKind",
    "TrainingDocument",
    "load_document",
    "parse_document",
]
