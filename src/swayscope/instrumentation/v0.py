"""``BackendInstrumentation``: the core plus the v0 surface, ``trace_path=`` and ``inst.trace``.

v0 code (the module swayscope grew from) builds ``BackendInstrumentation(trace_path=...)``
and may swap ``inst.trace`` for another :class:`TraceWriter`. The core
(:class:`~swayscope.instrumentation.core.Instrumentation`) knows no exporter; this thin
layer adds the JSONL writer as one more exporter, so that code runs unchanged. It is
the one class of that name; the package exports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swayscope.instrumentation.core import Instrumentation
from swayscope.instrumentation.exporters.jsonl import TraceWriter


class BackendInstrumentation(Instrumentation):
    """The core plus v0's JSONL trace: ``trace_path`` appends one line per lookup."""

    def __init__(self, *, trace_path: Path | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._trace = TraceWriter(trace_path)
        if self._trace.enabled:
            self.add_exporter(self._trace)

    @property
    def trace(self) -> TraceWriter:
        return self._trace

    @trace.setter
    def trace(self, writer: TraceWriter) -> None:
        """Redirect the JSONL trace (v0 behaviour): the old writer stops receiving events."""
        self.remove_exporter(self._trace)
        self._trace = writer
        if writer.enabled:
            self.add_exporter(writer)
        if self.closed:
            writer.close()

    def close(self) -> None:
        """Flush and shut down every exporter, the JSONL file included. Idempotent."""
        super().close()
        self._trace.close()


__all__ = ["BackendInstrumentation"]
