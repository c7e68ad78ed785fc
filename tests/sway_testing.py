"""Helpers shared by tests in several folders (a uniquely named module; tests/ is on sys.path)."""

from __future__ import annotations

from collections.abc import Mapping

from swayscope.cli import FLAG_OF
from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.exporters.factory import build_exporters
from swayscope.instrumentation.settings import TelemetrySettings, resolve_settings


def cli_settings(
    env: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    **given: object,
) -> TelemetrySettings:
    """Settings as the CLI resolves them: errors name the flags (or ``sources``)."""
    return resolve_settings(given, sources={**FLAG_OF, **(sources or {})}, env=env)


def cli_exporters(
    env: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    **given: object,
) -> list[Exporter]:
    """The exporters the CLI would build for these flag values."""
    return build_exporters(cli_settings(env, sources, **given), env=env)
