"""Wire a run's telemetry from the spec's ``telemetry:`` block and the CLI flags.

Flags override the spec. Each setting remembers where it came from, so an
error names ``--metrics-port`` or ``telemetry.metrics_port in suite.yaml``.
Everything is checked and every listener bound here, before a model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.telemetry_config import DEFAULT_FLAGS, build_exporters
from swayscope.suite.spec import TelemetrySpec

#: Spec key → the setting name ``build_exporters`` uses.
_SPEC_TO_SETTING = {
    "trace": "trace_path",
    "otlp_endpoint": "otlp_endpoint",
    "otlp_protocol": "otlp_protocol",
    "metrics_address": "metrics_address",
    "metrics_port": "metrics_port",
    "metrics_linger_s": "metrics_linger_s",
    "metrics_wait_s": "metrics_wait_s",
    "pushgateway": "pushgateway_url",
}


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    trace: Path | None = None
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    metrics_address: str | None = None
    metrics_port: int | None = None
    metrics_linger_s: float | None = None
    metrics_wait_s: float | None = None
    pushgateway: str | None = None
    capture_prompts: bool = False
    flags: dict[str, str] = field(default_factory=dict)
    """``build_exporters`` setting → how the user spelled it (flag or spec key)."""

    @classmethod
    def from_spec(cls, spec: TelemetrySpec, source: str) -> TelemetrySettings:
        values = spec.model_dump()
        flags = {
            setting: f"telemetry.{key} in {source}"
            for key, setting in _SPEC_TO_SETTING.items()
            if values.get(key) is not None
        }
        return cls(**values, flags=flags)

    def override(self, **given: Any) -> TelemetrySettings:
        """Apply CLI flags (None = not given) on top of the spec's values."""
        given = {k: v for k, v in given.items() if v is not None}
        flags = dict(self.flags)
        for key in given:
            setting = _SPEC_TO_SETTING.get(key)
            if setting is not None:
                flags[setting] = DEFAULT_FLAGS[setting]
        return dataclasses.replace(self, **given, flags=flags)


@dataclass(slots=True)
class Telemetry:
    """The exporters of one run, and where their data goes."""

    settings: TelemetrySettings
    exporters: list[Exporter]
    trace_existed: bool

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trace_file": str(self.settings.trace) if self.settings.trace else None,
            "metrics_url": None,
            "otlp_endpoint": None,
            "pushgateway": None,
        }
        for exporter in self.exporters:
            url = getattr(exporter, "url", None)
            if url:
                out["metrics_url"] = url
            push = getattr(exporter, "pushgateway_url", None)
            if push:
                out["pushgateway"] = push
            target = getattr(exporter, "target", None)
            if target is not None:
                out["otlp_endpoint"] = f"{target.endpoint} ({target.protocol})"
            elif getattr(exporter, "annotates_trace", False):
                out["otlp_endpoint"] = "host TracerProvider"
        return out

    def discard_unused_trace(self) -> None:
        """After a run that never started: leave no empty trace file behind."""
        trace = self.settings.trace
        if trace is None or self.trace_existed:
            return
        try:
            if trace.stat().st_size == 0:
                trace.unlink()
        except OSError:
            return


def start_telemetry(settings: TelemetrySettings, run_id: str) -> Telemetry:
    """Check every setting and start the OTel/Prometheus exporters (JSONL is the core's)."""
    exporters = build_exporters(
        otlp_endpoint=settings.otlp_endpoint,
        otlp_protocol=settings.otlp_protocol,
        metrics_address=settings.metrics_address,
        metrics_port=settings.metrics_port,
        metrics_linger_s=settings.metrics_linger_s,
        metrics_wait_s=settings.metrics_wait_s,
        pushgateway_url=settings.pushgateway,
        capture_prompts=settings.capture_prompts,
        flags={**DEFAULT_FLAGS, **settings.flags},
        run_id=run_id,
    )
    trace_existed = settings.trace is not None and settings.trace.exists()
    return Telemetry(settings=settings, exporters=exporters, trace_existed=trace_existed)


__all__ = ["Telemetry", "TelemetrySettings", "start_telemetry"]
