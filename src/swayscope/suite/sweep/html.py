"""The sweep summary as one self-contained HTML page: a plot per probe, the table below.

No script, no stylesheet or font from anywhere else, no image files: the plots are
SVG drawn by matplotlib (:func:`~swayscope.suite.sweep.plots.svg_plot`) and put inline,
so the page opens offline and can be attached or archived as is. Without matplotlib the
page says so where the plots would be. Every name and message is HTML-escaped.
"""

from __future__ import annotations

import logging
from html import escape

from swayscope.suite.sweep.plots import VERDICT_COLOURS, plots_unavailable, svg_plot
from swayscope.suite.sweep.report import cell, footer_lines, headline
from swayscope.suite.sweep.result import SweepResult
from swayscope.text_safety import escape_control_chars as safe

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1f2328; background: #ffffff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; }
figcaption { font-weight: 600; font-size: 13px; margin-bottom: 4px; }
figure svg { display: block; }
p.no-plots { color: #57606a; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }
th { background: #f6f8fa; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px;
          margin-right: 4px; vertical-align: middle; }
ul.footer { font-size: 12px; color: #57606a; }
"""


def _text(value: str) -> str:
    return escape(safe(value))


def render_html(sweep: SweepResult) -> str:
    """The page: headline, legend, one figure per probe, the table, the counters."""
    probes = sweep.probe_names()
    curves = {name: sweep.points(name) for name in probes}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_text(f'swayscope sweep: {sweep.suite}')}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_text(headline(sweep))}</h1>",
        '<p class="legend">'
        + "".join(
            f'<span><i class="swatch" style="background:{colour}"></i>{verdict}</span>'
            for verdict, colour in VERDICT_COLOURS.items()
        )
        + "</p>",
    ]
    missing = plots_unavailable() if probes else None
    if missing is not None:
        out.append(f'<p class="no-plots">No plots: {_text(missing)}.</p>')
    else:
        out.append('<div class="plots">')
        for i, name in enumerate(probes):
            kind = sweep.kind_of(name)
            caption = name if kind == name else f"{name} ({kind})"
            try:
                svg = svg_plot(curves[name], ylabel=sweep.score_label(name), gid=f"plot{i}")
            except Exception as exc:  # a figure must never cost the summary
                log.warning("the plot of %s could not be drawn: %r", name, exc)
                svg = f'<p class="no-plots">Not drawn: {_text(f"{type(exc).__name__}: {exc}")}</p>'
            out.append(
                f'<figure class="probe" data-probe="{_text(name)}">'
                f"<figcaption>{_text(caption)}</figcaption>{svg}</figure>"
            )
        out.append("</div>")
    out.append("<h2>Verdict score (z) per adapter, in checkpoint order</h2>")
    out.append(
        "<table><thead><tr><th>adapter</th><th>step</th>"
        + "".join(f"<th>{_text(n)}</th>" for n in probes)
        + "<th>status</th><th>result</th></tr></thead><tbody>"
    )
    for i, outcome in enumerate(sweep.adapters):
        step = "-" if outcome.adapter.step is None else str(outcome.adapter.step)
        cells = "".join(f"<td>{_text(cell(curves[n][i]))}</td>" for n in probes)
        status = outcome.status + (f": {outcome.error}" if outcome.error else "")
        result = str(outcome.result_file) if outcome.result_file else "-"
        out.append(
            f"<tr><td>{_text(outcome.adapter.label)}</td><td>{step}</td>{cells}"
            f"<td>{_text(status)}</td><td>{_text(result)}</td></tr>"
        )
    out.append("</tbody></table>")
    out.append('<ul class="footer">')
    out.extend(f"<li>{_text(line)}</li>" for line in footer_lines(sweep))
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"


__all__ = ["render_html"]
