"""Which TracerProvider spans go to: the host application's, or one built here.

A provider built here is never installed globally. Its resource comes from
``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``swayscope``
unless set, read by the SDK), its sampler parent-based on the ratio the core samples
new traces with, its span ids the core's (:class:`~.spans.PresetIds`). Its one span processor is a
:class:`~.holding.RootFirstSpanProcessor` (a trace's spans go on once its root
has ended) in front of a counting processor (:mod:`.processor`) in front of a
:class:`~.guard.GuardedSpanExporter` in front of the delivering exporter (OTLP
unless a ``span_exporter`` is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from swayscope import __version__
from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.exporters.otel.accounting import SpanAccounting
from swayscope.instrumentation.exporters.otel.environment import (
    BatchSettings,
    export_timeout_s,
)
from swayscope.instrumentation.exporters.otel.guard import (
    GuardedSpanExporter,
    endpoint_address,
)
from swayscope.instrumentation.exporters.otel.holding import RootFirstSpanProcessor
from swayscope.instrumentation.exporters.otel.processor import (
    CountingBatchSpanProcessor,
    CountingSimpleSpanProcessor,
)
from swayscope.instrumentation.exporters.otel.spans import PresetIds
from swayscope.instrumentation.settings import OtlpTarget

DEFAULT_SERVICE_NAME = "swayscope"


def host_tracer_provider() -> trace.TracerProvider | None:
    """The TracerProvider the host application installed globally, or None."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider


def otlp_span_exporter(
    target: OtlpTarget, timeout_s: float, env: Mapping[str, str]
) -> SpanExporter:
    """The SDK's OTLP span exporter for ``target`` (gRPC or HTTP/protobuf)."""
    timeout = export_timeout_s(env, timeout_s)
    try:
        if target.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter(endpoint=target.endpoint, timeout=timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(endpoint=target.endpoint, timeout=timeout)
    except ImportError as exc:
        raise TelemetryConfigError(
            f"OTLP protocol {target.protocol!r} (from {target.source}) needs "
            f"opentelemetry-exporter-otlp-proto-{'grpc' if target.protocol == 'grpc' else 'http'}"
            f", which is not installed ({exc}). Install swayscope[otel]."
        ) from exc


def build_resource(service_name: str | None) -> Resource:
    """The SDK's resource from the environment, with our service name and version filled in."""
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, SDK defaults
    extra: dict[str, str] = {}
    current = str(resource.attributes.get("service.name", ""))
    if service_name:
        extra["service.name"] = service_name
    elif not current or current.startswith("unknown_service"):
        extra["service.name"] = DEFAULT_SERVICE_NAME
    if "service.version" not in resource.attributes:
        extra["service.version"] = __version__
    return resource.merge(Resource(extra)) if extra else resource


@dataclass(frozen=True, slots=True)
class OwnPipeline:
    """A provider built here and the parts of it the exporter talks to."""

    provider: TracerProvider
    holder: RootFirstSpanProcessor
    processor: CountingBatchSpanProcessor | CountingSimpleSpanProcessor
    guard: GuardedSpanExporter
    ids: PresetIds


def build_pipeline(
    span_exporter: SpanExporter,
    accounting: SpanAccounting,
    *,
    target: OtlpTarget | None,
    service_name: str | None,
    batch: BatchSettings | None,
    shutdown_timeout_s: float,
    sample_ratio: float = 1.0,
) -> OwnPipeline:
    """TracerProvider → root first → counting processor (``batch`` None: synchronous) → guard
    → exporter."""
    guard = GuardedSpanExporter(
        span_exporter, address=endpoint_address(target) if target is not None else None
    )
    processor: CountingBatchSpanProcessor | CountingSimpleSpanProcessor
    if batch is None:
        processor = CountingSimpleSpanProcessor(guard, accounting)
    else:
        processor = CountingBatchSpanProcessor(
            guard, accounting, batch, shutdown_timeout_s=shutdown_timeout_s
        )
    ids = PresetIds()
    provider = TracerProvider(
        resource=build_resource(service_name), id_generator=ids, shutdown_on_exit=False,
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    holder = RootFirstSpanProcessor(processor)
    provider.add_span_processor(holder)
    return OwnPipeline(provider, holder, processor, guard, ids)
