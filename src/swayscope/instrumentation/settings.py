"""Telemetry settings: one typed model, checked once, before anything runs.

Each setting has one name everywhere: the field of :class:`TelemetrySettings`,
the key of a suite spec's ``telemetry:`` block and the Python keyword of
:func:`resolve_settings` (the CLI spells it as a flag, and says so through
``sources``). Values arrive raw from any source, are checked here, and a bad
one raises :class:`~swayscope.errors.TelemetryConfigError` naming the value
and where it came from (a flag, a spec key with its file and line, an
``OTEL_*`` variable).

This module imports no exporter and no telemetry library.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from swayscope.errors import TelemetryConfigError, shown
from swayscope.instrumentation.hashing import PROMPT_HASH_KEY_ENV

OtlpProtocol = Literal["grpc", "http/protobuf"]

#: The OTLP/HTTP path of the traces signal, appended to a base endpoint.
OTLP_TRACES_PATH = "/v1/traces"
#: Where the metrics endpoint listens unless told otherwise: this machine only.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where spans go. ``endpoint`` is what the SDK exporter gets: the full traces URL for
    http/protobuf, ``scheme://host:port`` for grpc. ``source`` names where it came from."""

    endpoint: str
    protocol: OtlpProtocol
    source: str


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Every telemetry setting of a run, checked. Build it with :func:`resolve_settings`."""

    trace: Path | None = None
    """JSONL trace file, appended to."""
    otlp_endpoint: OtlpTarget | None = None
    """Where spans go; None with ``otel`` true means the host application's TracerProvider."""
    otlp_protocol: OtlpProtocol = "http/protobuf"
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0 picks a free one); None: no endpoint."""
    metrics_linger_s: float = 0.0
    """After the run, keep the endpoint up at most this long for a scraper not seen yet (its
    first scrape ends it); scrapers that were scraping are always waited for (bounded)."""
    metrics_wait_s: float = 0.0
    """At run start, wait up to this long for a scrape of the zeroed series."""
    pushgateway: str | None = None
    """Pushgateway base URL the metrics are pushed to."""
    capture_prompts: bool = False
    """Put prompt text into telemetry (off: 12-hex hashes only)."""
    prompt_hash_key: str | None = field(default=None, repr=False)
    """Key of the keyed prompt hash (HMAC); default from ``$SWAYSCOPE_PROMPT_HASH_KEY``.
    A secret: no flag (flags show in process lists), never printed."""
    otel: bool = field(default=False, compare=False)
    """Derived: spans are wanted (an endpoint was given or an ``OTEL_*`` one is set)."""
    otlp_explicit: bool = field(default=False, compare=False)
    """Derived: the endpoint was given as a setting, not found in ``OTEL_*`` variables;
    it then wins over a host application's TracerProvider."""
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Setting name → where its value came from, for later error messages."""

    @property
    def prometheus(self) -> bool:
        return self.metrics_port is not None or self.pushgateway is not None

    def source(self, name: str) -> str:
        """How to name setting ``name`` in a message: its flag, spec key or Python name."""
        return self.sources.get(name, name)


#: The settings a user can give, by their one name (spec key, keyword, field).
SETTING_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(TelemetrySettings) if f.name not in ("otel", "otlp_explicit", "sources")
)
#: Settings that are secrets: read from the spec or the environment, never from a flag.
SECRET_SETTINGS: tuple[str, ...] = ("prompt_hash_key",)


#: Query parameters whose values are secrets (compared lower-case, ``-`` read as ``_``).
_SECRET_PARAMS = frozenset({
    "access_token", "api_key", "apikey", "auth", "key", "password", "secret", "sig",
    "signature", "token",
})


def redact_url(url: str) -> str:
    """``url`` fit to print or store: the password of its userinfo and the values of
    secret-looking query parameters replaced by ``***``. Not a URL: returned as is."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([
            (k, "***" if k.lower().replace("-", "_") in _SECRET_PARAMS else v) for k, v in pairs
        ], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


def _bad(value: object, source: str, why: str, hint: str = "") -> TelemetryConfigError:
    shown_value = shown(redact_url(value) if isinstance(value, str) else value)
    msg = f"invalid value {shown_value} for {source}: {why}"
    return TelemetryConfigError(msg + (f". {hint}" if hint else ""))


def env_true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def parse_otlp_protocol(value: str, source: str) -> OtlpProtocol:
    """``grpc`` or ``http/protobuf`` (``http`` is accepted as a short form)."""
    v = str(value).strip().lower()
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
    raw = str(value).strip()
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
    a setting (kept as given when it has a path), ``keep`` for a traces URL
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
    protocol: str | None, env: Mapping[str, str], source: str = "otlp_protocol"
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
    endpoint_source: str = "otlp_endpoint",
    protocol_source: str = "otlp_protocol",
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
    hint = "Give 0..65535 (0 picks a free port)."
    if isinstance(value, bool):
        raise _bad(value, source, "not a port number", hint)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise _bad(value, source, "not a port number", hint) from None
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise _bad(value, source, "port out of range", hint)
    return value


def parse_address(value: object, source: str) -> str:
    """A listen address: an IP literal or host name, no brackets, no scheme, no port."""
    v = str(value).strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    if not v or any(c.isspace() or c in "/@?#" for c in v):
        raise _bad(value, source, "not a host name or IP address",
                   f"Give an address such as {DEFAULT_METRICS_ADDRESS} (the default) or ::1.")
    return v


def parse_seconds(value: object, source: str) -> float:
    if isinstance(value, bool):
        raise _bad(value, source, "not a number of seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(value, source, "not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad(value, source, "must be a finite number of seconds >= 0")
    return seconds


def parse_pushgateway_url(value: object, source: str) -> str:
    """A Pushgateway base URL; ``host:port`` means ``http://host:port``."""
    url = _check_url(str(value), source, default_scheme="http", example="http://127.0.0.1:9091")
    return url.rstrip("/")


def parse_bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise _bad(value, source, "not true or false")


def _parse_trace(value: object, source: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _bad(value, source, "not a file path", "Give a file to append the JSONL trace to.")
    if "\0" in str(value):
        raise _bad(value, source, "a file path cannot hold a NUL byte (\\0)",
                   "Give a file to append the JSONL trace to.")
    return Path(value)


def _parse_key(value: object, source: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TelemetryConfigError(
            f"{source} must be a string (the key of the keyed prompt hash); "
            f"got {type(value).__name__}"
        )
    return value


def _check_names(given: Mapping[str, object], sources: Mapping[str, str]) -> None:
    for name in (*given, *sources):
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TelemetryConfigError(
                f"unknown telemetry setting {name!r}; {hint}"
                f"known settings: {', '.join(SETTING_NAMES)}"
            )


def resolve_settings(
    given: Mapping[str, object] | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> TelemetrySettings:
    """Check every given setting and the ``OTEL_*`` variables; raise on the first bad one.

    ``given`` maps setting names to raw values (None: not given). ``sources`` maps
    setting names to how a message should name them (``--metrics-port``,
    ``telemetry.metrics_port (suite.yaml:12)``); the name itself by default.

    Spans are on when ``otlp_endpoint`` is given or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``
    variable is set, unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
    (an explicit ``otlp_endpoint`` overrides the latter). A TracerProvider installed
    by the host application also turns them on; the exporter factory checks for one.
    """
    values = {k: v for k, v in (given or {}).items() if v is not None}
    src = dict(sources or {})
    _check_names(values, src)
    env = os.environ if env is None else env

    def name_of(key: str) -> str:
        return src.get(key, key)

    endpoint = values.get("otlp_endpoint")
    protocol = values.get("otlp_protocol")
    proto = resolve_otlp_protocol(
        None if protocol is None else str(protocol), env, name_of("otlp_protocol")
    )
    otlp = resolve_otlp_target(
        None if endpoint is None else str(endpoint), proto, env,
        endpoint_source=name_of("otlp_endpoint"),
    )
    exporter_env = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_env not in ("", "otlp", "none"):
        raise _bad(exporter_env, "OTEL_TRACES_EXPORTER", "swayscope exports spans over OTLP only",
                   "Use otlp or none.")
    otel = otlp is not None and (endpoint is not None or exporter_env != "none")
    if env_true(env, "OTEL_SDK_DISABLED"):
        otel = False

    port = parse_port(values["metrics_port"], name_of("metrics_port")) if (
        "metrics_port" in values) else None
    trace = _parse_trace(values["trace"], name_of("trace")) if "trace" in values else None
    push = parse_pushgateway_url(values["pushgateway"], name_of("pushgateway")) if (
        values.get("pushgateway")) else None
    return TelemetrySettings(
        trace=trace,
        otlp_endpoint=otlp,
        otlp_protocol=proto,
        metrics_address=parse_address(
            values.get("metrics_address", DEFAULT_METRICS_ADDRESS), name_of("metrics_address")
        ),
        metrics_port=port,
        metrics_linger_s=parse_seconds(
            values.get("metrics_linger_s", 0.0), name_of("metrics_linger_s")
        ),
        metrics_wait_s=parse_seconds(values.get("metrics_wait_s", 0.0), name_of("metrics_wait_s")),
        pushgateway=push,
        capture_prompts=parse_bool(
            values.get("capture_prompts", False), name_of("capture_prompts")
        ),
        prompt_hash_key=_parse_key(
            values.get("prompt_hash_key", env.get(PROMPT_HASH_KEY_ENV)),
            src.get("prompt_hash_key", PROMPT_HASH_KEY_ENV),
        ),
        otel=otel,
        otlp_explicit=endpoint is not None,
        sources=src,
    )


__all__ = [
    "DEFAULT_METRICS_ADDRESS",
    "OTLP_TRACES_PATH",
    "SECRET_SETTINGS",
    "SETTING_NAMES",
    "OtlpProtocol",
    "OtlpTarget",
    "TelemetrySettings",
    "env_true",
    "parse_address",
    "parse_bool",
    "parse_otlp_endpoint",
    "parse_otlp_protocol",
    "parse_port",
    "parse_pushgateway_url",
    "parse_seconds",
    "redact_url",
    "resolve_otlp_protocol",
    "resolve_otlp_target",
    "resolve_settings",
]
