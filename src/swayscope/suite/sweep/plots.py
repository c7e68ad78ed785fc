"""Score-vs-checkpoint plots: a sparkline for the terminal, an SVG figure for HTML.

Both take one probe's points in checkpoint order; a checkpoint without a score (the
probe gave none, the adapter did not load, the sweep stopped first) is a gap in the
sparkline and a cross on the bottom of the figure, in its verdict's colour.

The figures are drawn by matplotlib (the ``plots`` extra), imported here only, on its
SVG canvas: no GUI backend, no pyplot state, and rcParams changed only inside the call.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from swayscope.suite.sweep.result import Point
from swayscope.text_safety import escape_control_chars

if TYPE_CHECKING:
    from matplotlib.axes import Axes

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
#: The line through a numeric axis's scores, its CI band, the threshold lines.
LINE_COLOUR = "#0969da"
THRESHOLD_COLOUR = "#57606a"

#: What to install when matplotlib is missing.
PLOTS_HINT = "pip install 'swayscope[plots]'"
#: Figure size (inches) and the resolution its pixel size is worked out with.
FIGSIZE = (5.0, 3.1)
#: Category labels longer than this are shortened (the table below has them whole).
MAX_LABEL = 24
#: Category labels are set at an angle when any is longer than this, or there are many.
SLANT_LABEL, SLANT_COUNT = 8, 6
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


def plots_unavailable() -> str | None:
    """Why figures cannot be drawn here (matplotlib is missing), or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"the plots need matplotlib ({exc}); install it with: {PLOTS_HINT}"
    return None


def _label(text: str) -> str:
    """A category label: control characters escaped, shortened to :data:`MAX_LABEL`."""
    text = escape_control_chars(text)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, _OTHER_COLOUR)


def svg_plot(points: Sequence[Point], *, ylabel: str, gid: str) -> str:
    """The probe's score at each checkpoint as an SVG figure (``<svg>`` element only).

    Steps known for every checkpoint: a numeric step axis (spacing proportional to the
    step), the scores joined by a line, the CI as a band. Otherwise the adapters are
    categories: points only, the CI as error bars. The thresholds are dashed lines;
    each point has its verdict's colour, and a checkpoint without a score is a cross at
    the bottom. Every marker is an SVG group whose id is
    ``{gid}-{i}-{verdict}-{scored|unscored}`` (``i``: the checkpoint's index).
    Raises ImportError when matplotlib is missing (see :func:`plots_unavailable`).
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Text stays text (selectable, searchable, testable), the ids matplotlib writes stay
    # the same from run to run, and the minus sign is U+2212.
    with matplotlib.rc_context({
        "svg.fonttype": "none",
        "svg.hashsalt": "swayscope",
        "axes.unicode_minus": True,
        "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }):
        fig = Figure(figsize=FIGSIZE, layout="constrained")
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        numeric = bool(points) and all(p.step is not None for p in points)
        xs = [float(p.step) if numeric and p.step is not None else float(i)
              for i, p in enumerate(points)]
        if numeric:
            _numeric_series(ax, points, xs, gid)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("training step")
        else:
            _categorical_series(ax, points, xs, gid)
        _points(ax, points, xs, gid)
        _thresholds(ax, sorted({t for p in points for t in p.thresholds}))
        if all(p.score is None for p in points):
            ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center",
                    va="center", color=_OTHER_COLOUR)
            ax.set_yticks([])
        ax.set_ylabel(ylabel, parse_math=False)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
        ax.set_axisbelow(True)
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    # The ids matplotlib gives markers and clip paths are unique in one figure only.
    return _LOCAL_ID.sub(rf"\1{gid}-\2", svg[svg.index("<svg"):])


#: An id matplotlib makes (``m`` marker, ``p`` clip path, then 10 hex digits) where it
#: is defined (``id="``) or used (``#``).
_LOCAL_ID = re.compile(r'(id="|#)([mp][0-9a-f]{10})\b')


def _number(value: float) -> str:
    """``value`` as a tick label shows it: minus sign U+2212."""
    return f"{value:g}".replace("-", "\N{MINUS SIGN}")


def _thresholds(ax: Axes, values: list[float]) -> None:
    """A dashed line per threshold, labelled at its right end; ``-t`` and ``t`` (a
    threshold on the score's size) share one label, ``±t``."""
    for value in values:
        ax.axhline(value, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1, zorder=1)
        if value < 0 and -value in values:
            continue
        text = f"±{_number(value)}" if value > 0 and -value in values else _number(value)
        ax.annotate(
            f"threshold {text}", xy=(1.0, value), xycoords=("axes fraction", "data"),
            xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom",
            fontsize=7, color=THRESHOLD_COLOUR, parse_math=False,
        )


def _numeric_series(ax: Axes, points: Sequence[Point], xs: list[float], gid: str) -> None:
    """The line through the scores (broken at a checkpoint without one, id ``{gid}-line``)
    and the CI band (``{gid}-ci``)."""
    nan = float("nan")
    ax.plot(xs, [nan if p.score is None else p.score for p in points],
            color=LINE_COLOUR, linewidth=1.6, zorder=2, gid=f"{gid}-line")
    if any(p.ci is not None for p in points):
        low = [p.ci[0] if p.ci is not None else nan for p in points]
        high = [p.ci[1] if p.ci is not None else nan for p in points]
        ax.fill_between(xs, low, high, color=LINE_COLOUR, alpha=0.15, linewidth=0,
                        zorder=1, gid=f"{gid}-ci")
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)


def _categorical_series(
    ax: Axes, points: Sequence[Point], xs: list[float], gid: str
) -> None:
    """One tick per adapter (no line: the order says nothing), the CI as error bars (id
    ``{gid}-ci-{i}``)."""
    labels = [_label(p.label) for p in points]
    slant = len(points) > SLANT_COUNT or any(len(label) > SLANT_LABEL for label in labels)
    ax.set_xticks(xs, labels, parse_math=False)
    if slant:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.set_xlim(-0.5, len(points) - 0.5)
    for i, (x, p) in enumerate(zip(xs, points, strict=True)):
        if p.ci is not None and p.score is not None:
            bars = ax.errorbar(
                [x], [p.score], yerr=[[p.score - p.ci[0]], [p.ci[1] - p.score]], fmt="none",
                ecolor=_colour(p.verdict), elinewidth=1.2, capsize=4, zorder=2,
            )
            bars.lines[2][0].set_gid(f"{gid}-ci-{i}")  # the vertical bar
    ax.set_xlabel("adapter")


def _points(ax: Axes, points: Sequence[Point], xs: list[float], gid: str) -> None:
    """A marker per checkpoint in its verdict's colour; a cross on the bottom edge for a
    checkpoint without a score."""
    bottom = ax.get_xaxis_transform()  # x in data, y in axes fractions
    for i, (x, p) in enumerate(zip(xs, points, strict=True)):
        colour = _colour(p.verdict)
        verdict = re.sub(r"[^a-z_]", "_", p.verdict.lower()) or "unknown"
        if p.score is None:
            (marker,) = ax.plot([x], [0.04], marker="x", markersize=8, markeredgewidth=2,
                                color=colour, linestyle="none", transform=bottom,
                                clip_on=False, zorder=4)
            marker.set_gid(f"{gid}-{i}-{verdict}-unscored")
            # Upright: it fits above a cross at either end of the axis.
            ax.annotate(f"no score ({p.verdict})", xy=(x, 0.04), xycoords=bottom,
                        xytext=(0, 7), textcoords="offset points", ha="center",
                        va="bottom", rotation=90, fontsize=7, color=colour,
                        parse_math=False)
        else:
            (marker,) = ax.plot([x], [p.score], marker="o", markersize=6, color=colour,
                                markeredgecolor="white", linestyle="none", zorder=3)
            marker.set_gid(f"{gid}-{i}-{verdict}-scored")


__all__ = [
    "GAP",
    "LINE_COLOUR",
    "PLOTS_HINT",
    "SPARK_ASCII",
    "SPARK_UNICODE",
    "VERDICT_COLOURS",
    "plots_unavailable",
    "sparkline",
    "svg_plot",
]
