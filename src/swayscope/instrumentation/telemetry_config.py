"""Telemetry settings: parse and check them up front, then build the exporters.

Everything a user can get wrong (an endpoint URL, a protocol name, a port) is
checked here, before any model is loaded or any forward pass runs, and every
error names the value and the flag or environment variable it came from.

This module imports neither OpenTelemetry nor prometheus_client; the exporter
modules are imported by :func:`build_exporters` only when they are wanted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.exporter import Exporter

OtlpProtocol = Literal["grpc", "http/protobuf"]

#: How the CLI spells each setting; ``build_exporters(flags=...)`` may rename them.
DEFAULT_FLAGS: Mapping[str, str] = {
    "trace_path": "--trace",
    "otlp_endpoint": "--otlp-endpoint",
    "otlp_protocol": "--otlp-protocol",
    "metrics_address": "--metrics-address",
    "metrics_port": "--metrics-port",
    "metrics_linger_s": "--metrics-linger",
    "metrics_wait_s": "--metrics-wait",
    "pushgateway_url": "--pushgateway",
}

#: The OTLP/HTTP path of the traces signal, appended to a base endpoint.
OTLP_TRACES_PATH = "/v1/traces"


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where spans go. ``endpoint`` is what the SDK exporter gets: the full traces URL for
    http/protobuf, ``scheme://host:port`` for grpc. ``source`` names where it came from."""

    endpoint: str
    protocol: OtlpProtocol
    source: str


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """The checked result of the telemetry flags and ``OTEL_*`` variables."""

    trace_path: Path | None = None
    otel: bool = False
    """True when spans are wanted (an endpoint was given, or an ``OTEL_*`` endpoint is set)."""
    otlp: OtlpTarget | None = None
    """None with ``otel`` true: use the TracerProvider the host application installed."""
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    metrics_linger_s: float = 0.0
    pushgateway_url: str | None = None
    capture_prompts: bool = False

    @property
    def prometheus(self) -> bool:
        return self.metrics_port is not None or self.pushgateway_url is not None


#: Other spellings of the setting names accepted in ``flags`` (the suite's settings use them).
_FLAG_ALIASES = {"trace": "trace_path", "pushgateway": "pushgateway_url"}


def flag_names(flags: Mapping[str, str] | None) -> dict[str, str]:
    """DEFAULT_FLAGS overridden by ``flags`` (setting → the flag/source to name in errors)."""
    names = dict(DEFAULT_FLAGS)
    for key, value in (flags or {}).items():
        names[_FLAG_ALIASES.get(key, key)] = value
    return names


def _bad(value: object, source: str, why: str, hint: str = "") -> TelemetryConfigError:
    msg = f"invalid value {value!r} for {source}: {why}"
    return TelemetryConfigError(msg + (f". {hint}" if hint else ""))


def _env_true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def parse_otlp_protocol(value: str, source: str) -> OtlpProtocol:
    """``grpc`` or ``http/protobuf`` (``http`` is accepted as a short form)."""
    v = value.strip().lower()
    if v == "grpc":
        return "grpc"
    if v in ("http/protobuf", "http"):
        return "http/protobuf"
    if v == "http/json":
        raise _bad(value, source, "http/json is not supported by the Python OTLP exporter",
                   "Use grpc or http/protobuf.")
    raise _bad(value, source, "unknown OTLP protocol", "Use grpc or http/protobuf.")


def _check_url(
    value: str, source: str, *, default_scheme: str | None, example: str = "http://127.0.0.1:4318"
) -> str:
    """``value`` as a URL with a scheme, after checking host and port; errors name ``source``."""
    raw = value.strip()
    hint = f"Expected a URL such as {example}."
    if not raw or any(c.isspace() for c in raw):
        raise _bad(value, source, "not a URL (empty or contains whitespace)", hint)
    if "://" not in raw:
        if default_scheme is None:
            raise _bad(value, source, "missing the http:// or https:// scheme", hint)
        raw = f"{default_scheme}://{raw}"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise _bad(value, source, f"unparsable URL ({exc})", hint) from None
    if parts.scheme not in ("http", "https"):
        raise _bad(value, source, f"scheme {parts.scheme!r} is not http or https", hint)
    if not parts.hostname:
        raise _bad(value, source, "no host name", hint)
    if port is not None and port == 0:
        raise _bad(value, source, "port 0 is not a port a collector listens on", hint)
    return raw


def parse_otlp_endpoint(
    value: str,
    protocol: OtlpProtocol,
    source: str,
    *,
    signal_path: Literal["append", "if-missing", "keep"] = "if-missing",
) -> OtlpTarget:
    """Check an OTLP endpoint and turn it into what the SDK exporter for ``protocol`` takes.

    For http/protobuf, ``signal_path`` says where ``/v1/traces`` goes: ``append`` for
    a base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``, per the spec), ``if-missing`` for
    the CLI flag (kept as given when it has a path), ``keep`` for a traces URL
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). grpc endpoints keep only
    ``scheme://host:port``; a value without a scheme means plaintext (``http://``).
    """
    if protocol == "grpc":
        parts = urlsplit(_check_url(value, source, default_scheme="http"))
        return OtlpTarget(f"{parts.scheme}://{parts.netloc}", protocol, source)
    parts = urlsplit(_check_url(value, source, default_scheme=None))
    path = parts.path
    if signal_path == "append" or (signal_path == "if-missing" and path in ("", "/")):
        path = path.rstrip("/") + OTLP_TRACES_PATH
    return OtlpTarget(parts._replace(path=path).geturl(), protocol, source)


def resolve_otlp_protocol(
    protocol: str | None, env: Mapping[str, str], source: str = "the protocol argument"
) -> OtlpProtocol:
    """The explicit protocol, else ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``, else http/protobuf."""
    if protocol is not None:
        return parse_otlp_protocol(protocol, source)
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if env.get(name):
            return parse_otlp_protocol(env[name], name)
    return "http/protobuf"


def resolve_otlp_target(
    endpoint: str | None,
    protocol: str | None,
    env: Mapping[str, str],
    *,
    endpoint_source: str = "the endpoint argument",
    protocol_source: str = "the protocol argument",
    default: bool = False,
) -> OtlpTarget | None:
    """The OTLP target from an explicit endpoint, else from the ``OTEL_*`` variables.

    When neither names one: the OTLP default (``localhost:4318``/``:4317``) if
    ``default``, else None.
    """
    proto = resolve_otlp_protocol(protocol, env, protocol_source)
    if endpoint is not None:
        return parse_otlp_endpoint(endpoint, proto, endpoint_source)
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        return parse_otlp_endpoint(env[name], proto, name, signal_path="keep")
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        return parse_otlp_endpoint(env[name], proto, name, signal_path="append")
    if not default:
        return None
    port = 4317 if proto == "grpc" else 4318
    return parse_otlp_endpoint(f"http://localhost:{port}", proto, "the OTLP default")


def parse_port(value: object, source: str) -> int:
    """A TCP port 0..65535 (0 picks a free one)."""
    if isinstance(value, bool):
        raise _bad(value, source, "not a port number")
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise _bad(
                value, source, "not a port number", "Give 0..65535 (0 picks a free port)."
            ) from None
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise _bad(value, source, "port out of range", "Give 0..65535 (0 picks a free port).")
    return value


def parse_address(value: str, source: str) -> str:
    """A listen address: an IP literal or host name, no brackets, no scheme, no port."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if not v or any(c.isspace() or c in "/@?#" for c in v):
        raise _bad(value, source, "not a host name or IP address",
                   "Give an address such as 127.0.0.1 (the default) or ::1.")
    return v


def parse_seconds(value: object, source: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(value, source, "not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad(value, source, "must be a finite number of seconds >= 0")
    return seconds


def parse_pushgateway_url(value: str, source: str) -> str:
    """A Pushgateway base URL; ``host:port`` means ``http://host:port``."""
    url = _check_url(value, source, default_scheme="http", example="http://127.0.0.1:9091")
    return url.rstrip("/")


def resolve_telemetry_config(
    *,
    trace_path: Path | str | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    metrics_address: str | None = None,
    metrics_port: int | str | None = None,
    metrics_linger_s: float | str | None = None,
    pushgateway_url: str | None = None,
    capture_prompts: bool = False,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> TelemetryConfig:
    """Check every telemetry setting; raise :class:`TelemetryConfigError` on the first bad one.

    Spans are on when ``otlp_endpoint`` is given or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``
    variable is set, unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
    (an explicit ``otlp_endpoint`` overrides the latter). A TracerProvider installed
    by the host application (e.g. ``opentelemetry-instrument``) also turns them on;
    :func:`build_exporters` checks for one.
    """
    env = os.environ if env is None else env
    names = flag_names(flags)
    otlp = resolve_otlp_target(
        otlp_endpoint,
        otlp_protocol,
        env,
        endpoint_source=names["otlp_endpoint"],
        protocol_source=names["otlp_protocol"],
    )
    exporter_env = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_env not in ("", "otlp", "none"):
        raise _bad(exporter_env, "OTEL_TRACES_EXPORTER", "swayscope exports spans over OTLP only",
                   "Use otlp or none.")
    otel = otlp is not None and (otlp_endpoint is not None or exporter_env != "none")
    if _env_true(env, "OTEL_SDK_DISABLED"):
        otel = False
    port = None if metrics_port is None else parse_port(metrics_port, names["metrics_port"])
    address = parse_address(metrics_address or "127.0.0.1", names["metrics_address"])
    linger = 0.0 if metrics_linger_s is None else parse_seconds(
        metrics_linger_s, names["metrics_linger_s"]
    )
    push = None if not pushgateway_url else parse_pushgateway_url(
        pushgateway_url, names["pushgateway_url"]
    )
    return TelemetryConfig(
        trace_path=Path(trace_path) if trace_path is not None else None,
        otel=otel,
        otlp=otlp,
        metrics_address=address,
        metrics_port=port,
        metrics_linger_s=linger,
        pushgateway_url=push,
        capture_prompts=capture_prompts,
    )


def _host_tracer_provider_installed() -> bool:
    try:
        from swayscope.instrumentation.exporters.otel import host_tracer_provider
    except ImportError:
        return False
    return host_tracer_provider() is not None


def build_exporters(
    *,
    trace_path: Path | str | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    metrics_address: str | None = None,
    metrics_port: int | str | None = None,
    metrics_linger_s: float | str | None = None,
    pushgateway_url: str | None = None,
    capture_prompts: bool = False,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
    otel_hit_spans: bool = False,
    run_id: str | None = None,
    metrics_wait_s: float | str | None = None,
) -> list[Exporter]:
    """The exporters the CLI flags ask for, ready to pass to ``BackendInstrumentation``.

    Raises :class:`TelemetryConfigError` (naming the value and its flag or variable)
    before anything runs: a bad URL, protocol or port, a metrics port already in use,
    or a missing extra. Build this before loading the model. ``trace_path`` adds the
    JSONL writer (so do not also pass it to ``BackendInstrumentation``).
    """
    cfg = resolve_telemetry_config(
        trace_path=trace_path,
        otlp_endpoint=otlp_endpoint,
        otlp_protocol=otlp_protocol,
        metrics_address=metrics_address,
        metrics_port=metrics_port,
        metrics_linger_s=metrics_linger_s,
        pushgateway_url=pushgateway_url,
        capture_prompts=capture_prompts,
        env=env,
        flags=flags,
    )
    env = os.environ if env is None else env
    names = flag_names(flags)
    # A host TracerProvider (opentelemetry-instrument, an embedding app) is used as is,
    # unless the endpoint flag explicitly asks for our own OTLP pipeline.
    host = not _env_true(env, "OTEL_SDK_DISABLED") and _host_tracer_provider_installed()
    want_otel = cfg.otel or host
    own_target = cfg.otlp if cfg.otel and (otlp_endpoint is not None or not host) else None
    built: list[Exporter] = []
    try:
        if cfg.prometheus:
            try:
                from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
            except ImportError as exc:
                raise TelemetryConfigError(
                    f"{names['metrics_port']}/{names['pushgateway_url']} need prometheus_client, "
                    f"which is not installed ({exc}). Install swayscope[prometheus]."
                ) from exc
            built.append(
                PrometheusExporter(
                    address=cfg.metrics_address,
                    port=cfg.metrics_port,
                    linger_s=cfg.metrics_linger_s,
                    pushgateway_url=cfg.pushgateway_url,
                    run_id=run_id,
                    flags=names,
                    first_scrape_wait_s=(
                        0.0 if metrics_wait_s is None
                        else parse_seconds(metrics_wait_s, names["metrics_wait_s"])
                    ),
                )
            )
        if want_otel:
            try:
                from swayscope.instrumentation.exporters.otel import OtelExporter
            except ImportError as exc:
                raise TelemetryConfigError(
                    f"{names['otlp_endpoint']} needs the OpenTelemetry SDK, which is not "
                    f"installed ({exc}). Install swayscope[otel]."
                ) from exc
            built.append(
                OtelExporter(
                    target=own_target,
                    capture_prompts=cfg.capture_prompts,
                    hit_spans=otel_hit_spans,
                    env=env,
                )
            )
        if cfg.trace_path is not None:
            from swayscope.instrumentation.exporters.jsonl import TraceWriter

            built.append(TraceWriter(cfg.trace_path))
    except BaseException:
        for exporter in built:
            exporter.shutdown()
        raise
    return built


__all__ = [
    "DEFAULT_FLAGS",
    "OTLP_TRACES_PATH",
    "OtlpProtocol",
    "OtlpTarget",
    "TelemetryConfig",
    "build_exporters",
    "flag_names",
    "parse_address",
    "parse_otlp_endpoint",
    "parse_otlp_protocol",
    "parse_port",
    "parse_pushgateway_url",
    "parse_seconds",
    "resolve_otlp_protocol",
    "resolve_otlp_target",
    "resolve_telemetry_config",
]
