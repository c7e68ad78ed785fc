"""Read the PromQL expressions out of the Grafana dashboard.

Shared by the static dashboard test and the live Prometheus test: both need every
query of ``dashboards/grafana/swayscope.json`` with Grafana's template variables
replaced by values Prometheus accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "dashboards" / "grafana" / "swayscope.json"

# Match-all values for the dashboard's own variables, and what Grafana substitutes
# for its built-in interval variables with the provisioned timeInterval of 5s.
DEFAULT_SUBSTITUTIONS: dict[str, str] = {
    "job": ".*",
    "instance": ".*",
    "run_id": ".*",
    "worker": ".*",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}

# $name, ${name} and ${name:format}
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::[^}]*)?\}|(?P<plain>[A-Za-z_]\w*))")


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield every panel, including those nested inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def load_dashboard(path: str | Path = DASHBOARD) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


#: The row repeated once per worker of a pool (``models.workers``): a run without a pool
#: has no ``swayscope_worker_*`` series.
WORKER_ROW = "Worker $worker"
#: The row of a checkpoint sweep (its adapters' progress and scores): a run of its own has
#: no ``swayscope_sweep_adapter_progress_ratio`` series.
SWEEP_ROW = "Sweep"


def row_of_panels(path: str | Path = DASHBOARD) -> dict[int, str]:
    """Panel id → the title of the row it is in (rows are laid out in order)."""
    rows: dict[int, str] = {}
    row = ""
    for panel in load_dashboard(path).get("panels", []):
        if panel["type"] == "row":
            row = panel["title"]
        for inner in iter_panels([panel]):
            rows[inner["id"]] = row
    return rows


def panel_targets(path: str | Path = DASHBOARD) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query target of every panel."""
    dashboard = load_dashboard(path)
    return [
        (panel, target)
        for panel in iter_panels(dashboard.get("panels", []))
        for target in panel.get("targets") or []
    ]


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace Grafana template variables; an unknown variable raises KeyError."""
    table = dict(DEFAULT_SUBSTITUTIONS)
    if values:
        table.update(values)

    def repl(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name not in table:
            raise KeyError(f"unknown template variable ${name} in: {expr}")
        return table[name]

    return _VARIABLE.sub(repl, expr)


def dashboard_exprs(
    path: str | Path = DASHBOARD, values: Mapping[str, str] | None = None
) -> list[str]:
    """Every PromQL expression of the dashboard's panels, ready to send to Prometheus.

    Template variables get match-all values (``$job`` -> ``.*``, ...), and the
    interval variables fixed durations (``$__rate_interval`` -> ``1m``,
    ``$__interval`` -> ``15s``, ``$__range`` -> ``5m``); ``values`` overrides any of them.
    Template-variable queries (``label_values(...)``) are not PromQL and are not included.
    """
    return [
        substitute(target["expr"], values)
        for _panel, target in panel_targets(path)
        if target.get("expr")
    ]


def dashboard_exprs_by_panel(
    path: str | Path = DASHBOARD,
    values: Mapping[str, str] | None = None,
    *,
    rows: Collection[str] | None = None,
    except_rows: Collection[str] = (),
) -> list[tuple[str, str, str]]:
    """(panel title, refId, expression) for every expression, for readable failures; only
    the panels in ``rows`` (None: all), none in ``except_rows``."""
    row_of = row_of_panels(path)
    return [
        (panel.get("title", ""), target.get("refId", ""), substitute(target["expr"], values))
        for panel, target in panel_targets(path)
        if target.get("expr")
        and (rows is None or row_of[panel["id"]] in rows)
        and row_of[panel["id"]] not in except_rows
    ]
