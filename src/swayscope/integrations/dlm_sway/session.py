"""The telemetry of one opted-in dlm-sway process: settings from the environment, exporters once.

``swayscope sway`` checks its flags and passes them in
:data:`~.environment.TELEMETRY_ENV`; the ``OTEL_*`` variables are read as
``swayscope run`` reads them. The first instrumentation dlm-sway builds starts
the exporters — before its model loads, so a port in use stops the run with
exit 2 — and every later one shares them. They are shut down (spans flushed,
a last push, a last scrape) when the process exits.

Only the process that started them serves the metrics endpoint and pushes to
the Pushgateway: a Python subprocess that inherits the environment finds its
owner in :data:`~.environment.OWNER_ENV` and exports spans and trace lines only.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from swayscope.errors import SwayscopeError, TelemetryConfigError
from swayscope.instrumentation.events import Event
from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.settings import TelemetrySettings, resolve_settings
from swayscope.integrations.dlm_sway.environment import OWNER_ENV, TELEMETRY_ENV
from swayscope.suite.telemetry import Telemetry, start_telemetry

#: Settings only the owner process acts on: one endpoint, one push per run.
_OWNER_ONLY = ("metrics_port", "pushgateway")


def _payload(env: Mapping[str, str]) -> dict[str, Any]:
    raw = env.get(TELEMETRY_ENV, "")
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise TelemetryConfigError(
            f"{TELEMETRY_ENV} is not JSON ({exc}); start sway through `swayscope sway`"
        ) from None
    if not isinstance(payload, dict):
        raise TelemetryConfigError(f"{TELEMETRY_ENV} must hold a JSON object; start sway "
                                   "through `swayscope sway`")
    return payload


def read_settings(env: Mapping[str, str]) -> TelemetrySettings:
    """The settings ``swayscope sway`` passed, checked again here with the ``OTEL_*`` variables."""
    payload = _payload(env)
    given: dict[str, Any] = dict(payload.get("settings") or {})
    sources: dict[str, str] = dict(payload.get("sources") or {})
    owner = env.get(OWNER_ENV)
    if owner is not None and owner != str(os.getpid()):
        given = {k: v for k, v in given.items() if k not in _OWNER_ONLY}
    return resolve_settings(given, sources=sources, env=env)


class SharedExporter(Exporter):
    """One instrumentation's handle on an exporter of the session: its shutdown only flushes
    (dlm-sway closes each backend's instrumentation; the session outlives them)."""

    def __init__(self, inner: Exporter) -> None:
        self.inner = inner
        self.name = inner.name
        self.trace_settings = inner.trace_settings

    def bind(self, health: TelemetryHealth) -> None:
        """The inner exporter stays bound to the session's health."""

    def export(self, event: Event) -> None:
        self.inner.export(event)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return self.inner.force_flush(timeout_s)

    def shutdown(self) -> None:
        self.inner.force_flush()


class Session:
    """The exporters of this process, shared by every instrumentation dlm-sway builds."""

    def __init__(self, telemetry: Telemetry, run_id: str) -> None:
        self.telemetry = telemetry
        self.run_id = run_id
        self.health = TelemetryHealth()
        for exporter in telemetry.exporters:
            exporter.bind(self.health)
        self._closed = False

    @property
    def settings(self) -> TelemetrySettings:
        return self.telemetry.settings

    def exporters(self) -> list[Exporter]:
        """Handles for one new instrumentation."""
        return [SharedExporter(e) for e in self.telemetry.exporters]

    def describe(self) -> str:
        info = self.telemetry.info()
        parts = [
            f"{label} {info[key]}"
            for key, label in (
                ("trace_file", "JSONL trace"),
                ("metrics_url", "metrics"),
                ("pushgateway", "pushgateway"),
                ("otlp_endpoint", "spans"),
            )
            if info.get(key)
        ]
        return f"swayscope: telemetry of this sway run (run {self.run_id}): " + (
            " · ".join(parts) or "no exporters (counters only)"
        )

    def close(self) -> None:
        """Shut the exporters down; a trace file nothing was written to is removed. Idempotent."""
        if not self._closed:
            self._closed = True
            self.telemetry.shutdown()


_lock = threading.Lock()
_current: Session | None = None


def missing_library(
    exc: TelemetryConfigError, settings: TelemetrySettings, env: Mapping[str, str]
) -> TelemetryConfigError | None:
    """For an exporter whose library dlm-sway's Python cannot import: the error that says
    so, naming dlm-sway's environment and what to install there (the message of the
    exporter's own error is for swayscope's environment); None for any other error."""
    cause = exc.__cause__
    if not isinstance(cause, ImportError):
        return None
    module = cause.name or str(cause)
    extra, setting = (
        ("prometheus", "metrics_port" if settings.metrics_port is not None else "pushgateway")
        if module.startswith("prometheus")
        else ("otel", "otlp_endpoint")
    )
    requirements = (_payload(env).get("requirements") or {}).get(extra) or [f"swayscope[{extra}]"]
    install = " ".join(f"'{r}'" for r in requirements)
    return TelemetryConfigError(
        f"{settings.source(setting)} needs the Python module {module}, which dlm-sway's "
        f"environment ({sys.prefix}) lacks: swayscope's telemetry runs inside dlm-sway's "
        f"process, so the packages of swayscope's {extra} extra must be installed there, "
        f"not (only) in swayscope's environment: {sys.executable} -m pip install {install}"
    )


def _start(env: Mapping[str, str]) -> Session:
    try:
        settings = read_settings(env)
        run_id = uuid.uuid4().hex[:16]
        try:
            telemetry = start_telemetry(settings, run_id)
        except TelemetryConfigError as exc:
            raise missing_library(exc, settings, env) or exc from None
    except SwayscopeError as exc:
        sys.stderr.write(f"swayscope: error: {exc}\n")
        raise SystemExit(2) from None
    os.environ.setdefault(OWNER_ENV, str(os.getpid()))
    current = Session(telemetry, run_id)
    if telemetry.exporters:
        sys.stderr.write(current.describe() + "\n")
    return current


def session() -> Session:
    """This process's session, started on first use (exit 2 on a bad setting), closed at exit."""
    global _current
    with _lock:
        if _current is None:
            _current = _start(os.environ)
            atexit.register(_current.close)
        return _current


__all__ = ["Session", "SharedExporter", "missing_library", "read_settings", "session"]
