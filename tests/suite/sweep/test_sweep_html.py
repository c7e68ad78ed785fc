"""The sweep's HTML report in a real browser: headless Chromium parses it (the SVG plots
are in its DOM with one point per checkpoint) and draws it (a screenshot shows the plot
lines in their colour).

Locally a missing ``chromium`` skips with a message; with ``CI`` set it fails (``.ci/run``
installs Debian's ``chromium``).
"""

from __future__ import annotations

import itertools
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from sway_testing import missing
from sweep_testing import STEPS, Sweep

#: Chromium, headless, with nothing that reaches the network or the user's profile.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
#: The plot line's colour (``stroke="#0969da"`` in :mod:`swayscope.suite.sweep.plots`).
LINE_RGB = (0x09, 0x69, 0xDA)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    missing(
        "chromium is not installed (Debian package 'chromium'; .ci/run installs it)",
        "the sweep's HTML check",
    )


def run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc


class Plots(HTMLParser):
    """Each SVG plot in a DOM: its probe, the points of its line, its circles."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and "data-probe" in a:
            self.plots.append({"probe": a["data-probe"], "line": [], "circles": []})
        elif tag == "path" and a.get("class") == "score-line":
            self.plots[-1]["line"] = re.findall(r"[ML]([\d.]+) ([\d.]+)", a.get("d") or "")
        elif tag == "circle" and a.get("class") == "point":
            self.plots[-1]["circles"].append(a)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of an 8-bit RGB(A) PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6) and header[12] == 0, "8-bit RGB(A), not interlaced"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line[j] for j in range(stride) if j % bpp < 3))
        prev = line
    return width, height, rows


def test_the_html_report_renders_its_plots_in_chromium(five: Sweep, tmp_path: Path) -> None:
    page = five.out / "sweep.html"
    dom = run_chromium(page, tmp_path / "profile", "--dump-dom").stdout.decode()
    parser = Plots()
    parser.feed(dom)
    assert [p["probe"] for p in parser.plots] == ["delta_kl", "perplexity_shift"]
    for plot in parser.plots:
        assert len(plot["line"]) == len(STEPS)
        assert len(plot["circles"]) == len(STEPS)
        assert [c["data-adapter"] for c in plot["circles"]] == [f"step-{s:05d}" for s in STEPS]
    delta = parser.plots[0]
    # Scores grow at every checkpoint: each point is higher on the page (smaller y).
    ys = [float(y) for _, y in delta["line"]]
    assert all(a > b for a, b in itertools.pairwise(ys)), ys
    assert delta["circles"][0]["data-verdict"] == "fail"
    assert delta["circles"][-1]["data-verdict"] == "pass"

    shot = tmp_path / "shot.png"
    run_chromium(page, tmp_path / "profile", "--window-size=1000,800", f"--screenshot={shot}")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 800)
    pixels = [row[i:i + 3] for row in rows for i in range(0, len(row), 3)]
    blank = pixels.count(bytes((255, 255, 255)))
    assert blank < 0.97 * len(pixels), "the page is blank"
    line = sum(1 for p in pixels if all(abs(a - b) <= 24 for a, b in zip(p, LINE_RGB, strict=True)))
    assert line > 200, f"only {line} pixels of the plot lines' colour"
