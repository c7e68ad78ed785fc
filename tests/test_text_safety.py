"""Untrusted text made safe to render: control characters visible, Rich markup inert."""

from __future__ import annotations

import io
import subprocess
import sys
import unicodedata

import pytest
from rich.console import Console

from swayscope.text_safety import escape_control_chars, escape_rich_markup


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]52;c;aGVsbG8=\x07", "\\x1b]52;c;aGVsbG8=\\x07"),  # OSC 52: clipboard write
        ("\x1b]8;;http://evil\x1b\\link", "\\x1b]8;;http://evil\\x1b\\link"),  # OSC 8 link
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # CSI: clear screen, cursor home
        ("\x9b31m\x9d0;title\x9c", "\\x9b31m\\x9d0;title\\x9c"),  # C1 CSI, OSC, ST
        ("a\nb\rc\td\x00e\x7f", "a\\nb\\rc\\td\\x00e\\x7f"),  # forged log lines, NUL, DEL
        ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),  # bidi override/isolate
        ("zero\u200bwidth\ufeff\u00ad", "zero\\u200bwidth\\ufeff\\xad"),  # invisible format chars
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),  # Unicode line/paragraph separators
        ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),  # invisible tag characters
        ("lone \udcff", "lone \\udcff"),  # would crash an UTF-8 terminal write
    ],
)
def test_control_and_invisible_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    assert escape_control_chars(text) == shown
    assert escape_control_chars(text).isprintable()


@pytest.mark.parametrize(
    "text",
    ["plain ascii", "ünïcödé 日本語 emoji 🎉", "nbsp\u00a0and ideographic\u3000space",
     "back\\slash [INST]", ""],
)
def test_printable_text_is_unchanged(text: str) -> None:
    assert escape_control_chars(text) is text or escape_control_chars(text) == text


def test_every_character_that_is_not_printable_is_escaped() -> None:
    """Whatever the running Python's Unicode tables call unprintable, except spaces."""
    for code in range(0x110000):
        ch = chr(code)
        out = escape_control_chars(ch)
        if ch.isprintable() or unicodedata.category(ch) == "Zs":
            assert out == ch, hex(code)
        else:
            assert out != ch and out.isprintable(), hex(code)


@pytest.mark.parametrize(
    "name", ["[/]", "[/INST]", "[INST] hi [/INST]", "[bold red]x[/]", "end\\", "\\[b]", "[@click]"]
)
def test_rich_markup_is_escaped_so_it_prints_verbatim(name: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    console.print(f"[dim]probe[/dim] {escape_rich_markup(name)}[bold] ok[/bold]")
    assert out.getvalue() == f"probe {name} ok\n"


def test_rich_markup_escape_also_escapes_control_characters() -> None:
    assert escape_rich_markup("[/]\x1b[31m") == "\\[/]\\x1b[31m"


def test_module_imports_no_rich_until_markup_is_escaped() -> None:
    code = "import swayscope.text_safety, sys; print('rich' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
