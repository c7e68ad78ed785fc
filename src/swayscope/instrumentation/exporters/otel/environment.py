"""What the environment says about span delivery: ``OTEL_BSP_*``, the OTLP timeout, ``TRACEPARENT``.

Explicit arguments win over the variables, the variables over our defaults. The
TracerProvider's own variables (``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, span limits) are read by the SDK itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

#: Defaults of the span queue built here (each overridden by its OTEL_BSP_* variable).
DEFAULT_MAX_QUEUE_SIZE = 8192
DEFAULT_SCHEDULE_DELAY_S = 1.0
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
#: Per OTLP request (OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT overrides); the SDK default is 10 s.
DEFAULT_EXPORT_TIMEOUT_S = 3.0

OTLP_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How spans are queued and handed to the span exporter."""

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    schedule_delay_s: float = DEFAULT_SCHEDULE_DELAY_S
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """``env[name]`` as a positive int; unset → ``default``; malformed → warning, ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("ignoring %s=%r: not a positive integer; using %d", name, raw, default)
        return default
    return value


def batch_settings(
    env: Mapping[str, str],
    *,
    max_queue_size: int | None = None,
    schedule_delay_s: float | None = None,
) -> BatchSettings:
    """Arguments, else ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_SCHEDULE_DELAY`` (ms) /
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, else our defaults. A batch never exceeds the queue."""
    queue = max_queue_size or _positive_int(
        env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE
    )
    delay_s = (
        schedule_delay_s
        if schedule_delay_s is not None
        else _positive_int(
            env, "OTEL_BSP_SCHEDULE_DELAY", int(DEFAULT_SCHEDULE_DELAY_S * 1000)
        ) / 1000
    )
    batch = _positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE)
    return BatchSettings(queue, delay_s, min(batch, queue))


def export_timeout_s(env: Mapping[str, str], default: float) -> float | None:
    """``default``, or None when an OTLP timeout variable is set (the SDK exporter reads it)."""
    return None if any(env.get(name) for name in OTLP_TIMEOUT_VARIABLES) else default


def outer_context(env: Mapping[str, str]) -> Context | None:
    """The W3C ``TRACEPARENT`` (+ ``TRACESTATE``) of an outer trace, as a parent context."""
    header = env.get("TRACEPARENT", "").strip()
    if not header:
        return None
    carrier = {"traceparent": header}
    if env.get("TRACESTATE"):
        carrier["tracestate"] = env["TRACESTATE"]
    ctx = TraceContextTextMapPropagator().extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        log.warning(
            "ignoring TRACEPARENT=%r: not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>); "
            "the run starts its own trace",
            header,
        )
        return None
    return ctx
