"""JSONL trace: one JSON object per cache lookup, appended and flushed line by line.

The seed's fields keep their names and meanings (``ts`` is when the lookup
finished, ``wall_ms`` its duration, or for a batched miss its share of the
forward call); new fields are only added, so a reader of the seed's format
still reads these files. Each line is flushed as written: a crash loses
nothing that was already looked up.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from swayscope.errors import TracePathError
from swayscope.instrumentation.events import CacheLookup, Event
from swayscope.instrumentation.exporter import Exporter

#: Version of the line format; bumped only if a field changes meaning.
SCHEMA_VERSION = 1


@dataclass(slots=True)
class _TraceEvent:
    """One trace line. The first eight fields are the seed's; the rest were added."""

    ts: float
    probe: str | None
    view_id: str
    prompt_hash: str
    top_k: int
    op: str
    wall_ms: float
    hit: bool
    run_id: str | None = None
    start_ts: float | None = None
    view_kind: str | None = None
    batch_id: str | None = None
    batch_size: int | None = None
    batch_wall_ms: float | None = None
    n_tokens: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    error: str | None = None
    prompt: str | None = None

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "ts": self.ts,
            "probe": self.probe,
            "view_id": self.view_id,
            "prompt_hash": self.prompt_hash,
            "top_k": self.top_k,
            "op": self.op,
            "wall_ms": self.wall_ms,
            "hit": self.hit,
            "run_id": self.run_id,
            "start_ts": self.start_ts,
            "view_kind": self.view_kind,
            "batch_id": self.batch_id,
            "batch_size": self.batch_size,
            "batch_wall_ms": self.batch_wall_ms,
            "n_tokens": self.n_tokens,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "error": self.error,
        }
        if self.prompt is not None:
            payload["prompt"] = self.prompt
        return payload

    @classmethod
    def from_lookup(cls, event: CacheLookup) -> _TraceEvent:
        start_ts = event.start_ns / 1e9
        return cls(
            ts=start_ts + event.duration_s,
            probe=event.probe,
            view_id=event.view_id,
            prompt_hash=event.prompt_hash,
            top_k=event.top_k,
            op=event.op,
            wall_ms=event.duration_s * 1000.0,
            hit=event.hit,
            run_id=event.run_id,
            start_ts=start_ts,
            view_kind=event.view_kind,
            batch_id=event.batch_id,
            batch_size=event.batch_size,
            batch_wall_ms=(
                event.batch_duration_s * 1000.0 if event.batch_duration_s is not None else None
            ),
            n_tokens=event.n_tokens,
            trace_id=event.trace_id,
            span_id=event.span_id,
            error=event.error,
            prompt=event.prompt,
        )


class TraceWriter(Exporter):
    """Append-only JSONL writer; ``TraceWriter(None)`` is a disabled no-op.

    The file is opened when the writer is built, so an unwritable path fails
    before the first forward pass, not in the middle of a run.
    """

    name = "jsonl"

    def __init__(self, path: Path | str | None) -> None:
        self._path = Path(path) if path is not None else None
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        if self._path is not None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self._path.open("a", encoding="utf-8")
            except OSError as exc:
                raise TracePathError(
                    f"cannot open trace file {str(self._path)!r} for appending: "
                    f"{exc.strerror or exc}. Choose a writable path (--trace FILE)."
                ) from exc

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def enabled(self) -> bool:
        return self._fh is not None

    def write(self, event: _TraceEvent) -> None:
        """Append one line (seed API)."""
        if self._fh is None:
            return
        line = json.dumps(event.to_json()) + "\n"
        with self._lock:
            if self._fh is not None:
                self._fh.write(line)
                self._fh.flush()

    def export(self, event: Event) -> None:
        if self._fh is not None and type(event) is CacheLookup:
            self.write(_TraceEvent.from_lookup(event))

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
        return True

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def shutdown(self) -> None:
        self.close()


JsonlExporter = TraceWriter

__all__ = ["SCHEMA_VERSION", "JsonlExporter", "TraceWriter", "_TraceEvent"]
