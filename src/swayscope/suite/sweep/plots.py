"""Score-vs-checkpoint plots: a sparkline for the terminal, an inline SVG for HTML.

Both take one probe's points in checkpoint order; a checkpoint without a score (the
probe gave none, the adapter did not load, the sweep stopped first) is a gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape as _html

from swayscope.suite.sweep.result import Point
from swayscope.text_safety import escape_control_chars

#: Eight levels, lowest first: unicode block elements, and what a plain terminal shows.
SPARK_UNICODE = "▁▂▃▄▅▆▇█"
SPARK_ASCII = "_.,-=+*#"
#: A checkpoint without a score.
GAP = " "

#: Colours of the verdicts (points and legend), shared by the HTML report.
VERDICT_COLOURS = {
    "pass": "#1a7f37",
    "warn": "#b08800",
    "fail": "#cf222e",
    "error": "#8250df",
    "skip": "#6e7781",
}
_OTHER_COLOUR = "#6e7781"


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    known = [v for v in values if v is not None]
    return (min(known), max(known)) if known else None


def sparkline(values: Sequence[float | None], *, unicode: bool = True) -> str:
    """One character per value, its height scaled between the values' min and max."""
    ramp = SPARK_UNICODE if unicode else SPARK_ASCII
    span = _range(values)
    if span is None:
        return GAP * len(values)
    low, high = span
    out = []
    for v in values:
        if v is None:
            out.append(GAP)
        elif high == low:
            out.append(ramp[0])
        else:
            out.append(ramp[min(len(ramp) - 1, int((v - low) / (high - low) * len(ramp)))])
    return "".join(out)


def _text(text: str) -> str:
    """``text`` fit for SVG text and attributes: control characters and markup escaped."""
    return _html(escape_control_chars(text))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


#: SVG geometry (pixels): the plot area inside the margins.
WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 14, 46


def _x(i: int, n: int) -> float:
    inner = WIDTH - LEFT - RIGHT
    return LEFT + (inner / 2 if n == 1 else inner * i / (n - 1))


def _y(v: float, low: float, high: float) -> float:
    inner = HEIGHT - TOP - BOTTOM
    if high == low:
        return TOP + inner / 2
    return TOP + inner * (1 - (v - low) / (high - low))


def svg_plot(probe: str, points: Sequence[Point]) -> str:
    """An inline SVG: the probe's score at each checkpoint, points coloured by verdict.

    The line is one ``<path class="score-line">`` (a new ``M`` after each gap), each
    scored checkpoint one ``<circle class="point">``; no script, no external resource.
    """
    n = len(points)
    span = _range([p.score for p in points])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-probe="{_text(probe)}" data-checkpoints="{n}">',
        f"<title>{_text(probe)}: score per checkpoint</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{HEIGHT - TOP - BOTTOM}" fill="#f6f8fa" stroke="#d0d7de"/>',
    ]
    if span is None:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            'font-size="12" fill="#6e7781">no scores</text>'
        )
    else:
        low, high = span
        for value in sorted({low, high}):
            y = _y(value, low, high)
            parts.append(
                f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f'font-size="11">{_text(_fmt(value))}</text>'
            )
        if low < 0 < high:
            y0 = _y(0.0, low, high)
            parts.append(
                f'<line x1="{LEFT}" y1="{y0:.1f}" x2="{WIDTH - RIGHT}" y2="{y0:.1f}" '
                'stroke="#8c959f" stroke-dasharray="3 3"/>'
            )
        commands: list[str] = []
        pen_up = True
        for i, p in enumerate(points):
            if p.score is None:
                pen_up = True
                continue
            commands.append(f"{'M' if pen_up else 'L'}{_x(i, n):.1f} {_y(p.score, low, high):.1f}")
            pen_up = False
        parts.append(
            f'<path class="score-line" d="{" ".join(commands)}" fill="none" '
            'stroke="#0969da" stroke-width="2"/>'
        )
        for i, p in enumerate(points):
            if p.score is None:
                continue
            colour = VERDICT_COLOURS.get(p.verdict, _OTHER_COLOUR)
            parts.append(
                f'<circle class="point" cx="{_x(i, n):.1f}" cy="{_y(p.score, low, high):.1f}" '
                f'r="4" fill="{colour}" data-adapter="{_text(p.label)}" '
                f'data-verdict="{_text(p.verdict)}" data-score="{p.score!r}">'
                f"<title>{_text(p.label)}: {_text(p.verdict)} {_text(_fmt(p.score))}"
                "</title></circle>"
            )
    step = max(1, math.ceil(n / 8))  # at most about eight labels under the axis
    for i, p in enumerate(points):
        if i % step and i != n - 1:
            continue
        label = p.label if p.step is None else str(p.step)
        parts.append(
            f'<text class="checkpoint" x="{_x(i, n):.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle" font-size="11">{_text(label[:18])}</text>'
        )
    axis = "step" if all(p.step is not None for p in points) else "adapter"
    parts.append(
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'font-size="11" fill="#57606a">{axis}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["GAP", "SPARK_ASCII", "SPARK_UNICODE", "VERDICT_COLOURS", "sparkline", "svg_plot"]
