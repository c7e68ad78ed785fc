"""What the environment says about span delivery: ``OTEL_BSP_*``, the OTLP timeout, the sampler.

Explicit arguments win over the variables, the variables over our defaults. The sampler
(``OTEL_TRACES_SAMPLER``) is read here, because the core decides which traces are
sampled (:class:`~swayscope.instrumentation.tracing.TraceSettings`) and the provider
built here must decide alike. ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and
span limits are read by the SDK itself; ``TRACEPARENT`` by the core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

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


SAMPLER_VARIABLE = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG_VARIABLE = "OTEL_TRACES_SAMPLER_ARG"
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_FIXED_SAMPLERS = {
    "always_on": 1.0, "parentbased_always_on": 1.0,
    "always_off": 0.0, "parentbased_always_off": 0.0,
}


def sample_ratio(env: Mapping[str, str]) -> float:
    """The share of new traces ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``) samples; children
    follow their parent (parent-based). Unknown samplers and bad ratios: a warning, all."""
    name = env.get(SAMPLER_VARIABLE, "").strip().lower()
    if not name:
        return 1.0
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name in _RATIO_SAMPLERS:
        raw = env.get(SAMPLER_ARG_VARIABLE, "1.0").strip() or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if 0.0 <= ratio <= 1.0:
            return ratio
        log.warning("ignoring %s=%r: not a ratio between 0 and 1; sampling every trace",
                    SAMPLER_ARG_VARIABLE, raw)
        return 1.0
    log.warning("%s=%r is not a sampler swayscope's own provider knows (always_on, "
                "always_off, traceidratio, their parentbased_ forms); sampling every trace",
                SAMPLER_VARIABLE, name)
    return 1.0


def export_timeout_s(env: Mapping[str, str], default: float) -> float | None:
    """``default``, or None when an OTLP timeout variable is set (the SDK exporter reads it)."""
    return None if any(env.get(name) for name in OTLP_TIMEOUT_VARIABLES) else default
