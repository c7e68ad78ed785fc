"""Make untrusted text safe to render: no terminal control sequences, no Rich markup.

Names from a spec or a trace file, error messages and paths reach terminals,
markdown files and log lines. Raw, an ``ESC`` starts a CSI sequence (colours,
cursor moves, screen clears) or an OSC sequence (``ESC ] 52`` writes the
user's clipboard, ``ESC ] 8`` makes hidden links); C1 controls (``U+009B`` is a
one-character CSI) do the same on some terminals; bidi overrides and other
invisible format characters make text display as something it is not; a
``\\n`` forges a log line. :func:`escape_control_chars` shows each of them
as a visible escape instead, so the text reads as what it is.

Only the standard library is imported at module load; :func:`escape_rich_markup`
imports ``rich`` when it is called.
"""

from __future__ import annotations

import re
import unicodedata

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: Everything but printable ASCII; each match is then checked with ``str.isprintable``.
_CANDIDATE = re.compile(r"[^\x20-\x7e]")


def _visible(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_match(match: re.Match[str]) -> str:
    ch = match.group()
    if ch.isprintable() or unicodedata.category(ch) == "Zs":
        return ch
    return _visible(ch)


def escape_control_chars(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character that is not printable shown as a visible escape.

    Escaped: C0 controls (``ESC`` → ``\\x1b``, newline → ``\\n``, tab → ``\\t``),
    DEL and C1 controls (``\\x9b``), format characters (bidi overrides and
    isolates such as ``\\u202e``, zero-width characters, tag characters), line
    and paragraph separators, lone surrogates, private-use and unassigned code
    points: whatever :meth:`str.isprintable` rejects, except space separators
    (``U+00A0`` and its kin stay as they are). Everything else, including
    backslashes, is unchanged, so ordinary text and non-Latin scripts read as
    before. Text with nothing to escape is returned as is (one C-speed check).

    This neutralises whole escape sequences: with their introducer (``ESC``,
    ``\\x9b``, ``\\x9d``) shown as text, the rest of a CSI or OSC sequence (OSC 52
    clipboard writes included) is inert printable characters.

    ``keep_newlines`` leaves ``\\n`` as a line break, for a message of several lines
    (a spec error lists one problem per line) that goes to a terminal, not a log.
    """
    if text.isprintable():
        return text
    if keep_newlines:
        return "\n".join(_CANDIDATE.sub(_escape_match, line) for line in text.split("\n"))
    return _CANDIDATE.sub(_escape_match, text)


#: Markdown's backslash-escapable characters that make text a link, a code span, a cell's end or
#: an escape; and HTML's, written as entities (a backslash before ``<`` is not enough in
#: every renderer). What is left can only emphasise.
_MARKDOWN_ESCAPES = str.maketrans(
    {"\\": "\\\\", "[": "\\[", "]": "\\]", "|": "\\|", "`": "\\`", "<": "&lt;",
     ">": "&gt;", "&": "&amp;"}
)


def escape_markdown(text: str) -> str:
    """``text`` safe in a markdown line or table cell: controls escaped, and no HTML, link,
    code span or cell break can come from it (a suite, probe or adapter folder named
    ``<img src=x onerror=...>`` renders as that text)."""
    return escape_control_chars(text).translate(_MARKDOWN_ESCAPES)


def escape_rich_markup(text: str) -> str:
    """``text`` safe to embed in a Rich markup string: controls escaped, then markup.

    A name such as ``[/]``, ``[bold]`` or a chat prompt's ``[/INST]`` then prints
    verbatim instead of raising ``MarkupError`` or restyling the output. As in
    :func:`rich.markup.escape`, a trailing backslash is doubled so it cannot escape
    a tag that follows (before plain text it then shows as two).
    Emoji codes (``:smile:``) are replaced by Rich's console unless it was made
    with ``emoji=False``; passing a :class:`rich.text.Text` instead of a string
    avoids markup and emoji codes altogether.
    """
    from rich.markup import escape

    return escape(escape_control_chars(text))


__all__ = ["escape_control_chars", "escape_markdown", "escape_rich_markup"]
