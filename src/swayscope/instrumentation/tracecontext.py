"""W3C Trace Context: the ``traceparent`` header a forward call carries to another process.

``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`` (version 00 of
https://www.w3.org/TR/trace-context/). A worker that computes part of a forward
call reads the driver's forward span from it and records its own spans as that
span's children; it needs no tracing library for that, so the core writes and
reads the header itself (OpenTelemetry's ``TraceContextTextMapPropagator`` reads
the same text).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
_SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceParent:
    """The parent a remote span is made under: its trace, its span, whether it is sampled."""

    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def header(self) -> str:
        """The ``traceparent`` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{_SAMPLED if self.sampled else 0:02x}"


def parse_traceparent(header: str | None) -> TraceParent | None:
    """The parent a ``traceparent`` header names; None when it is absent or malformed."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_SPAN_ID:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & _SAMPLED))


def new_span_id() -> str:
    """A random, valid (non-zero) 16-hex span id."""
    while True:
        span_id = os.urandom(8).hex()
        if span_id != _INVALID_SPAN_ID:
            return span_id


__all__ = ["TraceParent", "new_span_id", "parse_traceparent"]
