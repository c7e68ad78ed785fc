"""A run's telemetry: settings from the spec's ``telemetry:`` block and the caller's overrides.

Overrides (the CLI's flags) win over the spec. Each value keeps where it came
from, so an error names ``--metrics-port`` or
``telemetry.metrics_port (suite.yaml:12)``. Everything is checked and every
listener bound here, before a model loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.exporters.factory import build_exporters
from swayscope.instrumentation.settings import TelemetrySettings, redact_url, resolve_settings
from swayscope.suite.spec import LoadedSuite


def run_settings(
    loaded: LoadedSuite,
    overrides: Mapping[str, object] | None = None,
    override_sources: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> TelemetrySettings:
    """The spec's telemetry settings with ``overrides`` (None: not given) on top, checked."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, value in loaded.spec.telemetry.model_dump(exclude_none=True).items():
        values[key] = value
        sources[key] = f"telemetry.{key} ({loaded.where('telemetry', key)})"
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
            sources[key] = (override_sources or {}).get(key, key)
    return resolve_settings(values, sources=sources, env=env)


@dataclass(slots=True)
class Telemetry:
    """The exporters of one run, and where their data goes."""

    settings: TelemetrySettings
    exporters: list[Exporter]
    trace_existed: bool

    def info(self) -> dict[str, Any]:
        """Where telemetry goes, fit to print and store (credentials in URLs redacted)."""
        out: dict[str, Any] = {
            "trace_file": str(self.settings.trace) if self.settings.trace else None,
            "metrics_url": None,
            "otlp_endpoint": None,
            "pushgateway": None,
        }
        for exporter in self.exporters:
            url = getattr(exporter, "url", None)
            if url:
                out["metrics_url"] = redact_url(url)
            push = getattr(exporter, "pushgateway_url", None)
            if push:
                out["pushgateway"] = redact_url(push)
            target = getattr(exporter, "target", None)
            if target is not None:
                out["otlp_endpoint"] = f"{redact_url(target.endpoint)} ({target.protocol})"
            elif exporter.trace_settings is not None:
                out["otlp_endpoint"] = "host TracerProvider"
        return out

    def finish(self, health: TelemetryHealth) -> None:
        """The run is over: each exporter delivers what it holds (spans, the final push) and
        counts what it could not, so a run's result can report every loss. A metrics
        endpoint keeps serving the final values until the instrumentation is closed.

        Exporters that push (``finish``) go last, so the final push carries the others'
        losses. Failures are counted in ``health``, never raised.
        """
        pushers = [e for e in self.exporters if callable(getattr(e, "finish", None))]
        others = [e for e in self.exporters if e not in pushers]
        for exporter in [*others, *pushers]:
            try:
                getattr(exporter, "finish", exporter.shutdown)()
            except Exception as exc:
                health.record_error(exporter.name, exc)

    def shutdown(self) -> None:
        """For a run that never started: stop the exporters, leave no empty trace file."""
        for exporter in self.exporters:
            exporter.shutdown()
        self.discard_unused_trace()

    def discard_unused_trace(self) -> None:
        trace = self.settings.trace
        if trace is None or self.trace_existed:
            return
        try:
            if trace.stat().st_size == 0:
                trace.unlink()
        except OSError:
            return


def start_telemetry(settings: TelemetrySettings, run_id: str) -> Telemetry:
    """Start every exporter ``settings`` asks for (JSONL, OTel, Prometheus)."""
    trace_existed = settings.trace is not None and settings.trace.exists()
    exporters = build_exporters(settings, run_id=run_id)
    return Telemetry(settings=settings, exporters=exporters, trace_existed=trace_existed)


__all__ = ["Telemetry", "run_settings", "start_telemetry"]
