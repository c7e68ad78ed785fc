"""A dead collector costs nothing: fail fast, then back off.

:class:`GuardedSpanExporter` wraps the delivering ``SpanExporter``. Until a first
delivery succeeds, and again after a failure, a 0.25 s TCP connect to the
endpoint comes first, so a closed port fails in a millisecond instead of the SDK
exporter's seconds of retries. After a failure, batches are refused at once for
a back-off period (5 s, doubling to 60 s, reset by a success). Refused and
failed batches are reported as ``FAILURE`` (or the exporter's exception is
re-raised); counting them is the span processor's job.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from swayscope.instrumentation.settings import OtlpTarget

log = logging.getLogger(__name__)

#: How long a TCP connect to the collector may take before it counts as down.
CONNECT_CHECK_TIMEOUT_S = 0.25
#: An export running longer than this makes delivery count as failing (see ``failing``).
STUCK_EXPORT_S = 0.25
DEFAULT_BACKOFF_S = 5.0
DEFAULT_MAX_BACKOFF_S = 60.0


def endpoint_address(target: OtlpTarget) -> tuple[str, int] | None:
    """(host, port) the OTLP exporter will connect to, or None when the URL names no host."""
    parts = urlsplit(target.endpoint)
    if parts.hostname is None:
        return None
    default = 4317 if target.protocol == "grpc" else (443 if parts.scheme == "https" else 80)
    return parts.hostname, parts.port or default


def check_listening(address: tuple[str, int], timeout_s: float = CONNECT_CHECK_TIMEOUT_S) -> None:
    """Raise OSError unless a TCP connection to ``address`` opens within ``timeout_s``."""
    with socket.create_connection(address, timeout=timeout_s):
        pass


class GuardedSpanExporter(SpanExporter):
    """Delegates to ``inner``; after a failure refuses batches at once for a back-off period."""

    def __init__(
        self,
        inner: SpanExporter,
        *,
        address: tuple[str, int] | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    ) -> None:
        self._inner = inner
        self._address = address
        self._healthy = False
        self._base_backoff = self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._refuse_until = 0.0
        self._busy_since: float | None = None
        self._shut = False

    @property
    def failing(self) -> bool:
        """Delivery is known to fail, or one export has been running for a while."""
        now = time.monotonic()
        busy = self._busy_since
        return now < self._refuse_until or (busy is not None and now - busy > STUCK_EXPORT_S)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut or time.monotonic() < self._refuse_until:
            return SpanExportResult.FAILURE
        self._busy_since = time.monotonic()
        try:
            if not self._healthy and self._address is not None:
                # Until a delivery succeeds, check that something listens before handing
                # the batch to the SDK exporter, whose retries would take seconds.
                check_listening(self._address)
            result = self._inner.export(spans)
        except Exception:
            self._failed()
            raise
        finally:
            self._busy_since = None
        if result is SpanExportResult.SUCCESS:
            self._healthy = True
            self._backoff = self._base_backoff
        else:
            self._failed()
        return result

    def _failed(self) -> None:
        self._healthy = False
        self._refuse_until = time.monotonic() + self._backoff
        log.debug("span delivery failed; refusing batches for %.0f s", self._backoff)
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def shutdown(self) -> None:
        """Shut the inner exporter down (which also ends its retries); later batches fail."""
        if self._shut:
            return
        self._shut = True
        try:
            self._inner.shutdown()
        except Exception as exc:
            log.debug("span exporter shutdown failed: %s", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
