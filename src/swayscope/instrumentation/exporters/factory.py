"""Build the exporters a :class:`~swayscope.instrumentation.settings.TelemetrySettings` asks for.

Each exporter module (and so its library) is imported only when its exporter
is wanted: a run with no telemetry imports neither OpenTelemetry nor
prometheus_client.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Mapping

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.exporters.jsonl import TraceWriter
from swayscope.instrumentation.settings import TelemetrySettings, env_true

log = logging.getLogger(__name__)


def host_tracer_provider_installed() -> bool:
    """True when the host application installed a global TracerProvider.

    An application that installed one has imported the OpenTelemetry API
    already, so when it is not imported there is nothing to find (and nothing
    is imported to find out).
    """
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return False
    provider = api.get_tracer_provider()
    return not isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider)


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _prometheus(settings: TelemetrySettings, run_id: str | None) -> Exporter:
    try:
        from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
    except ImportError as exc:
        raise TelemetryConfigError(
            f"{settings.source('metrics_port')}/{settings.source('pushgateway')} need "
            f"prometheus_client, which is not installed ({exc}). "
            "Install swayscope[prometheus]."
        ) from exc
    if settings.metrics_port is not None and not is_loopback(settings.metrics_address):
        log.warning(
            "the metrics endpoint listens on %s (from %s): any host that can reach this "
            "machine can read it (run id, suite, model and adapter names). Keep the default "
            "127.0.0.1 unless a scraper on another host needs it, and firewall the port.",
            settings.metrics_address, settings.source("metrics_address"),
        )
    return PrometheusExporter(
        address=settings.metrics_address,
        port=settings.metrics_port,
        linger_s=settings.metrics_linger_s,
        pushgateway_url=settings.pushgateway,
        run_id=run_id,
        first_scrape_wait_s=settings.metrics_wait_s,
        sources=settings.sources,
    )


def _otel(settings: TelemetrySettings, host: bool, env: Mapping[str, str] | None) -> Exporter:
    try:
        from swayscope.instrumentation.exporters.otel import OtelExporter
    except ImportError as exc:
        raise TelemetryConfigError(
            f"{settings.source('otlp_endpoint')} needs the OpenTelemetry SDK, which is not "
            f"installed ({exc}). Install swayscope[otel]."
        ) from exc
    # A host TracerProvider (opentelemetry-instrument, an embedding app) is used as is,
    # unless an endpoint setting explicitly asks for our own OTLP pipeline.
    own = settings.otel and (settings.otlp_explicit or not host)
    return OtelExporter(
        target=settings.otlp_endpoint if own else None,
        capture_prompts=settings.capture_prompts,
        env=env,
    )


def build_exporters(
    settings: TelemetrySettings,
    *,
    run_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Exporter]:
    """The exporters ``settings`` asks for, ready to pass to the instrumentation.

    Raises :class:`TelemetryConfigError` (naming the value and its source) before
    anything runs: a metrics port already in use, an unwritable trace file, a
    missing extra. Build this before loading the model. On failure, the
    exporters already built are shut down (nothing is left listening).
    """
    host = (
        not env_true(os.environ if env is None else env, "OTEL_SDK_DISABLED")
        and host_tracer_provider_installed()
    )
    built: list[Exporter] = []
    try:
        if settings.prometheus:
            built.append(_prometheus(settings, run_id))
        if settings.otel or host:
            built.append(_otel(settings, host, env))
        if settings.trace is not None:
            built.append(TraceWriter(settings.trace, source=settings.source("trace")))
    except BaseException:
        for exporter in built:
            exporter.shutdown()
        raise
    return built


__all__ = ["build_exporters", "host_tracer_provider_installed"]
