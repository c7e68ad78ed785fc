"""The sweep's HTML report in a real browser: headless Chromium lays the page out, and a
script added to a copy of it measures each figure (its text, where every checkpoint's
marker is, what colour it is); a screenshot shows the plot lines in their colour.

The figures are matplotlib's SVG: tick labels are ``<text>`` elements (``svg.fonttype``
``none``), a negative one with U+2212 as its minus sign; each checkpoint's marker is a
group with the id ``plot{n}-{i}-{verdict}-{scored|unscored}``.

Locally a missing ``chromium`` skips with a message; with ``CI`` set it fails (``.ci/run``
installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sway_testing import missing
from sweep_testing import STEPS, Sweep

from swayscope.probes.base import ProbeResult, Verdict
from swayscope.suite.result import SuiteResult
from swayscope.suite.sweep.adapters import SweepAdapter
from swayscope.suite.sweep.html import render_html
from swayscope.suite.sweep.plots import LINE_COLOUR, VERDICT_COLOURS
from swayscope.suite.sweep.result import AdapterOutcome, SweepResult

#: Chromium, headless, with nothing that reaches the network or the user's profile.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
LINE_RGB = tuple(int(LINE_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
MINUS = "\N{MINUS SIGN}"

#: Added to a copy of the page (the report itself has no script): per figure, the box of
#: every text relative to the SVG's own, and each checkpoint marker's centre and fill.
MEASURE = """<script>
const out = [];
for (const fig of document.querySelectorAll("figure[data-probe]")) {
  const svg = fig.querySelector("svg");
  const box = svg.getBoundingClientRect();
  const rel = (r) => ({left: r.left - box.left, right: r.right - box.left,
                       top: r.top - box.top, bottom: r.bottom - box.top});
  out.push({
    probe: fig.dataset.probe,
    caption: fig.querySelector("figcaption").textContent,
    width: box.width, height: box.height,
    texts: [...svg.querySelectorAll("text")].map(
      (t) => ({text: t.textContent, ...rel(t.getBoundingClientRect())})),
    marks: [...svg.querySelectorAll("g[id]")].filter((g) => /-(un)?scored$/.test(g.id)).map(
      (g) => {
        const r = rel(g.getBoundingClientRect());
        const use = g.querySelector("use");
        return {id: g.id, x: (r.left + r.right) / 2, y: (r.top + r.bottom) / 2,
                fill: use ? getComputedStyle(use).fill : null};
      }),
    ids: [...svg.querySelectorAll("[id]")].map((e) => e.id),
    elements: [...svg.querySelectorAll("*")].map((e) => e.localName),
  });
}
const pre = document.createElement("pre");
pre.id = "measured";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


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


class _Measured(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "pre" and ("id", "measured") in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def measure(page: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Each figure of ``page`` as Chromium laid it out, by probe."""
    copy = tmp_path / f"measured-{page.name}"
    copy.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), "utf-8"
    )
    dom = run_chromium(copy, tmp_path / "profile", "--dump-dom").stdout.decode()
    parser = _Measured()
    parser.feed(dom)
    assert parser.text, "the measuring script did not run"
    return {fig["probe"]: fig for fig in json.loads(parser.text)}


def rgb(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def marks(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's checkpoint markers in checkpoint order, each with its parsed id."""
    out = []
    for mark in fig["marks"]:
        _, index, verdict, scored = mark["id"].rsplit("-", 3)
        out.append({**mark, "index": int(index), "verdict": verdict, "scored": scored})
    return sorted(out, key=lambda m: m["index"])


def assert_text_inside(fig: dict[str, Any]) -> None:
    """No text runs past the figure's edges (a clipped label, a lost sign)."""
    for t in fig["texts"]:
        inside = (
            t["left"] >= -0.5 and t["top"] >= -0.5
            and t["right"] <= fig["width"] + 0.5 and t["bottom"] <= fig["height"] + 0.5
        )
        assert inside, f"{fig['probe']}: {t['text']!r} outside the figure: {t} vs {fig['width']}"


def tick_labels(fig: dict[str, Any]) -> set[str]:
    return {t["text"] for t in fig["texts"]}


# A sweep result built by hand: steps 0, 5, 10, 20, 40 (unevenly spaced), a shift that
# goes negative, and prompt_collapse with no score at step 0; and the SmolLM2 demo's
# trained / noop / random, whose order means nothing.
STEPS_UNEVEN = (0, 5, 10, 20, 40)
LABEL_HTML = "<b>random</b>&co"


def _outcome(i: int, label: str, step: int | None, probes: list[ProbeResult]) -> AdapterOutcome:
    result = SuiteResult(run_id=f"run{i}", suite="demo", probes=probes)
    return AdapterOutcome(SweepAdapter(label, Path(label), step, i), "complete", result)


def _delta(score: float, verdict: Verdict) -> ProbeResult:
    return ProbeResult("delta_kl", "delta_kl", verdict, score=score,
                       evidence={"threshold": 0.005, "ci_low": score * 0.8,
                                 "ci_high": score * 1.2})


def _shift(score: float, verdict: Verdict) -> ProbeResult:
    return ProbeResult("shift", "perplexity_shift", verdict, score=score,
                       evidence={"threshold": 0.01, "ci_low": score - 0.01,
                                 "ci_high": score + 0.01})


def _collapse(score: float | None, verdict: Verdict) -> ProbeResult:
    return ProbeResult("prompt_collapse", "prompt_collapse", verdict,
                       score=score, evidence={"min_retention": 0.1})


def uneven_steps() -> SweepResult:
    rows = zip(
        STEPS_UNEVEN,
        [(0.0, "fail"), (0.0019, "fail"), (0.038, "pass"), (0.0495, "pass"), (0.056, "pass")],
        [(0.0, "warn"), (-0.0412, "pass"), (-0.0731, "pass"), (0.016, "pass"), (0.0839, "pass")],
        [(None, "fail"), (1.08, "pass"), (1.14, "pass"), (1.36, "pass"), (1.67, "pass")],
        strict=True,
    )
    return SweepResult("uneven", "demo", "base", "step", [
        _outcome(i, f"step-{s:05d}", s, [_delta(*d), _shift(*p), _collapse(*c)])
        for i, (s, d, p, c) in enumerate(rows)
    ])


def trio() -> SweepResult:
    return SweepResult("trio", "demo", "base", "given", [
        _outcome(0, "trained", None, [_delta(0.3067, "pass"), _collapse(0.8821, "pass")]),
        _outcome(1, "noop", None, [_delta(0.0, "fail"), _collapse(None, "fail")]),
        _outcome(2, LABEL_HTML, None, [_delta(0.00203, "fail"), _collapse(1.175, "warn")]),
    ])


def test_a_numeric_step_axis_with_a_negative_tick_the_thresholds_and_a_no_score_marker(
    tmp_path: Path,
) -> None:
    page = tmp_path / "sweep.html"
    page.write_text(render_html(uneven_steps()), encoding="utf-8")
    figs = measure(page, tmp_path)
    assert list(figs) == ["delta_kl", "shift", "prompt_collapse"]
    # Titles name the probe once, its kind only where it differs.
    assert [f["caption"] for f in figs.values()] == [
        "delta_kl", "shift (perplexity_shift)", "prompt_collapse"]
    for fig in figs.values():
        assert_text_inside(fig)
        assert "training step" in tick_labels(fig)
        # Spacing proportional to the step: 0 → 5 is an eighth of 0 → 40.
        xs = [m["x"] for m in marks(fig)]
        assert len(xs) == len(STEPS_UNEVEN)
        assert (xs[1] - xs[0]) / (xs[4] - xs[0]) == pytest.approx(5 / 40, abs=0.01)
    delta, shift, collapse = figs.values()
    assert "mean divergence (nats)" in tick_labels(delta)
    assert "threshold 0.005" in tick_labels(delta)
    assert {"plot0-line", "plot0-ci"} <= set(delta["ids"])
    assert [m["verdict"] for m in marks(delta)] == ["fail", "fail", "pass", "pass", "pass"]
    for m in marks(delta):
        assert m["fill"] == rgb(VERDICT_COLOURS[m["verdict"]])
    # The shift goes negative: its axis has negative ticks, with matplotlib's minus U+2212.
    assert "log-prob shift (nats/token)" in tick_labels(shift)
    negative = sorted(t for t in tick_labels(shift) if t.startswith(MINUS))
    assert negative, tick_labels(shift)
    assert all(float(t.replace(MINUS, "-")) < 0 for t in negative)
    assert "threshold ±0.01" in tick_labels(shift)
    assert all("-" not in t for t in tick_labels(shift) if t[0].isdigit() or t[0] == MINUS)
    # prompt_collapse had no score at step 0: a cross at the bottom, in its verdict's colour.
    first = marks(collapse)[0]
    assert (first["verdict"], first["scored"]) == ("fail", "unscored")
    assert first["fill"] == rgb(VERDICT_COLOURS["fail"])
    assert first["y"] > max(m["y"] for m in marks(collapse)[1:])
    assert "no score (fail)" in tick_labels(collapse)
    assert "retention (ratio)" in tick_labels(collapse)


def test_unordered_adapters_are_categories_without_a_line_and_their_labels_fit(
    tmp_path: Path,
) -> None:
    page = tmp_path / "sweep.html"
    page.write_text(render_html(trio()), encoding="utf-8")
    figs = measure(page, tmp_path)
    delta, collapse = figs["delta_kl"], figs["prompt_collapse"]
    for fig in (delta, collapse):
        assert_text_inside(fig)
        assert {"trained", "noop", LABEL_HTML, "adapter"} <= tick_labels(fig)
        # Names are text, never markup: no element came from the label.
        assert "b" not in fig["elements"]
        assert not any(i.endswith("-line") for i in fig["ids"])
        xs = [m["x"] for m in marks(fig)]
        assert xs == sorted(xs) and len(xs) == 3
        assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.5)
    assert {"plot0-ci-0", "plot0-ci-1", "plot0-ci-2"} <= set(delta["ids"])
    assert [(m["verdict"], m["scored"]) for m in marks(collapse)] == [
        ("pass", "scored"), ("fail", "unscored"), ("warn", "scored")]


def test_without_matplotlib_the_page_says_so_instead_of_a_plot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    page = render_html(trio())
    assert "<svg" not in page
    assert "No plots: the plots need matplotlib" in page
    assert "pip install &#x27;swayscope[plots]&#x27;" in page
    assert "<td>trained</td>" in page  # the table is still there


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_figure_matplotlib_cannot_draw_is_said_and_the_rest_stays() -> None:
    sweep = uneven_steps()
    assert sweep.adapters[0].result is not None and sweep.adapters[1].result is not None
    sweep.adapters[0].result.probes[0].score = 1e308  # too far apart for any axis
    sweep.adapters[1].result.probes[0].score = -1e308
    page = render_html(sweep)
    assert "Not drawn: " in page
    assert page.count("<svg") == 2 and 'data-probe="shift"' in page


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


def test_a_real_sweeps_report_renders_its_plots_in_chromium(five: Sweep, tmp_path: Path) -> None:
    page = five.out / "sweep.html"
    figs = measure(page, tmp_path)
    assert list(figs) == ["delta_kl", "perplexity_shift"]
    for fig in figs.values():
        assert_text_inside(fig)
        assert [m["index"] for m in marks(fig)] == list(range(len(STEPS)))
        assert all(m["scored"] == "scored" for m in marks(fig))
        assert {str(s) for s in STEPS} <= tick_labels(fig)
    delta = marks(figs["delta_kl"])
    # Scores grow at every checkpoint: each point is higher on the page (smaller y).
    ys = [m["y"] for m in delta]
    assert ys == sorted(ys, reverse=True), ys
    assert delta[0]["verdict"] == "fail" and delta[-1]["verdict"] == "pass"

    shot = tmp_path / "shot.png"
    run_chromium(page, tmp_path / "profile", "--window-size=1000,800", f"--screenshot={shot}")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 800)
    pixels = [row[i:i + 3] for row in rows for i in range(0, len(row), 3)]
    blank = pixels.count(bytes((255, 255, 255)))
    assert blank < 0.97 * len(pixels), "the page is blank"
    line = sum(1 for p in pixels if all(abs(a - b) <= 24 for a, b in zip(p, LINE_RGB, strict=True)))
    assert line > 200, f"only {line} pixels of the plot lines' colour"
