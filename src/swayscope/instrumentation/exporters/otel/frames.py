"""The open run, probe and view spans, innermost last, and the cache counts inside each."""

from __future__ import annotations

import threading
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context

FrameKind = Literal["run", "probe", "view"]


class Frame:
    """One open run/probe/view span and the cache counts of everything inside it."""

    __slots__ = (
        "calls", "context", "hits", "kind", "misses", "name", "sampled", "span",
        "span_hex", "trace_hex",
    )

    def __init__(
        self, kind: FrameKind, name: str, span: trace.Span, parent: Context | None
    ) -> None:
        self.kind = kind
        self.name = name
        self.span = span
        #: The context a child span is started in.
        self.context = trace.set_span_in_context(span, parent)
        sc = span.get_span_context()
        self.sampled: bool = sc.is_valid and sc.trace_flags.sampled
        self.trace_hex = format(sc.trace_id, "032x") if self.sampled else None
        self.span_hex = format(sc.span_id, "016x") if self.sampled else None
        self.hits = 0
        self.misses = 0
        self.calls = 0


class FrameStack:
    """Thread-safe stack of open frames; forward calls and hits count on the innermost."""

    def __init__(self, root: Context | None) -> None:
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._root = root

    @property
    def root(self) -> Context | None:
        """The outer (TRACEPARENT) context the run span starts in, if any."""
        return self._root

    def parent_context(self) -> Context | None:
        """Where a new span starts: the innermost frame, else the outer (TRACEPARENT) context."""
        with self._lock:
            return self._frames[-1].context if self._frames else self._root

    def push(self, frame: Frame) -> None:
        with self._lock:
            self._frames.append(frame)

    def count_hit(self) -> Frame | None:
        """Count one cache hit on the innermost frame; that frame, or None outside any."""
        with self._lock:
            if not self._frames:
                return None
            frame = self._frames[-1]
            frame.hits += 1
            return frame

    def count_forward(self, misses: int) -> Frame | None:
        """Count one model call and its misses on the innermost frame; that frame, or None."""
        with self._lock:
            if not self._frames:
                return None
            frame = self._frames[-1]
            frame.misses += misses
            frame.calls += 1
            return frame

    def pop(self, kind: FrameKind, name: str | None) -> list[Frame]:
        """Remove the innermost open ``kind`` frame (named ``name`` unless None) and every
        frame left open inside it, outermost first; [] when there is none. Their counts
        are rolled outwards first, so each span reports everything inside it."""
        with self._lock:
            frames = self._frames
            for i in range(len(frames) - 1, -1, -1):
                if frames[i].kind == kind and (name is None or frames[i].name == name):
                    break
            else:
                return []
            popped = frames[i:]
            del frames[i:]
            outer = frames[-1] if frames else None
            for inner, parent in zip(
                reversed(popped), [*reversed(popped[:-1]), outer], strict=True
            ):
                if parent is not None:
                    parent.hits += inner.hits
                    parent.misses += inner.misses
                    parent.calls += inner.calls
        return popped

    def pop_all(self) -> list[Frame]:
        """Remove every open frame, outermost first (counts are not rolled up)."""
        with self._lock:
            frames, self._frames = self._frames, []
        return frames
