"""JSONL trace: one JSON object per cache lookup, appended line by line.

The v0 fields keep their names and meanings (``ts`` is when the lookup
finished, ``wall_ms`` its duration, or for a batched miss its share of the
forward call); new fields are only added, so a reader of the v0 format
still reads these files. ``adapter`` names the adapter the line's run scored
(in a checkpoint sweep, the checkpoint's label), as its ``RunStarted`` said.

Every line is strict JSON (RFC 8259: no ``NaN``/``Infinity``) and reaches the
file whole or not at all:

- each line is one ``write(2)`` on an ``O_APPEND`` descriptor, so it is in the
  kernel as soon as its lookup returns (a crash loses nothing already looked
  up) and lines of concurrent writers never interleave;
- a short write (disk full, file size limit) is rolled back: the fragment is
  truncated away when nothing was appended after it, else overwritten in place
  with spaces ending in a newline (a blank line, which readers skip), so
  another writer's line that follows it stays intact; the write then fails
  with :class:`~swayscope.errors.TracePathError`;
- a writer that opens a file whose last byte is not a newline (a fragment left
  by a process killed in the middle of a write, or by a foreign tool) starts
  a new line first, so its own first line is not glued to the fragment;
- the path must be a regular file (or not exist yet): a FIFO, device, socket
  or directory is refused before anything could block on it.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import operator
import os
import stat
import threading
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_str
from pathlib import Path
from typing import Any, SupportsIndex

from swayscope.errors import InputError, TracePathError, shown
from swayscope.instrumentation.events import CacheLookup, Event, RunEnded, RunStarted
from swayscope.instrumentation.exporter import Exporter

#: Version of the line format; bumped only if a field changes meaning.
SCHEMA_VERSION = 1

#: The line's fields in the order they are written; ``prompt`` only when captured.
LINE_FIELDS = (
    "schema", "ts", "probe", "view_id", "prompt_hash", "top_k", "op", "wall_ms", "hit",
    "run_id", "start_ts", "view_kind", "batch_id", "batch_size", "batch_wall_ms",
    "n_tokens", "trace_id", "span_id", "error", "adapter", "tier", "prompt",
)
_INT_FIELDS = frozenset({"top_k", "batch_size", "n_tokens"})
_FLOAT_FIELDS = frozenset({"ts", "wall_ms", "start_ts", "batch_wall_ms"})
_REQUIRED_STR_FIELDS = frozenset({"view_id", "prompt_hash", "op"})

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _js(value: str | None) -> str:
    return "null" if value is None else _encode_str(value)


def _jn(value: float | None) -> str:
    # float.__repr__ is what json.dumps writes for finite floats; ints print as ints.
    return "null" if value is None else repr(value)


def _line(
    ts: float, probe: str | None, view_id: str, prompt_hash: str, top_k: int | None, op: str,
    wall_ms: float, hit: bool, run_id: str | None, start_ts: float | None,
    view_kind: str | None, batch_id: str | None, batch_size: int | None,
    batch_wall_ms: float | None, n_tokens: int | None, trace_id: str | None,
    span_id: str | None, error: str | None, adapter: str | None, tier: str | None,
    prompt: str | None,
) -> str:
    """One trace line, hand-encoded: json.dumps of a dict costs ~5 µs a lookup, this ~1 µs.

    Numbers of exactly ``int`` or finite ``float`` type (what the core produces)
    take the fast path; anything else (a numpy integer, ``NaN``, a bool) goes
    through :func:`_checked_line`, which encodes it correctly or refuses it. A
    string field that is not a ``str`` makes the encoder raise ``TypeError``,
    which sends the line through the same check.
    """
    # x - x == 0.0 holds exactly for finite floats (inf - inf and nan - nan are nan).
    if (
        type(ts) is float and ts - ts == 0.0
        and type(wall_ms) is float and wall_ms - wall_ms == 0.0
        and type(top_k) is int
        and (start_ts is None or (type(start_ts) is float and start_ts - start_ts == 0.0))
        and (batch_size is None or type(batch_size) is int)
        and (
            batch_wall_ms is None
            or (type(batch_wall_ms) is float and batch_wall_ms - batch_wall_ms == 0.0)
        )
        and (n_tokens is None or type(n_tokens) is int)
    ):
        try:
            tail = "}\n" if prompt is None else f',"prompt":{_encode_str(prompt)}}}\n'
            return (
                f'{{"schema":{SCHEMA_VERSION},"ts":{ts!r},"probe":{_js(probe)},'
                f'"view_id":{_encode_str(view_id)},"prompt_hash":{_encode_str(prompt_hash)},'
                f'"top_k":{top_k!r},"op":{_encode_str(op)},"wall_ms":{wall_ms!r},'
                f'"hit":{"true" if hit else "false"},"run_id":{_js(run_id)},'
                f'"start_ts":{_jn(start_ts)},"view_kind":{_js(view_kind)},'
                f'"batch_id":{_js(batch_id)},"batch_size":{_jn(batch_size)},'
                f'"batch_wall_ms":{_jn(batch_wall_ms)},"n_tokens":{_jn(n_tokens)},'
                f'"trace_id":{_js(trace_id)},"span_id":{_js(span_id)},'
                f'"error":{_js(error)},"adapter":{_js(adapter)},"tier":{_js(tier)}{tail}'
            )
        except TypeError:  # a string field that is not a str: the check names it
            pass
    return _checked_line(
        ts, probe, view_id, prompt_hash, top_k, op, wall_ms, hit, run_id, start_ts,
        view_kind, batch_id, batch_size, batch_wall_ms, n_tokens, trace_id, span_id,
        error, adapter, tier, prompt,
    )


#: Fields whose refused value is named by type only: they may hold prompt text.
_NOT_ECHOED = frozenset({"prompt", "error"})


def _refuse(name: str, value: object, wanted: str) -> InputError:
    kind = type(value).__name__
    got = f"a value of type {kind}" if name in _NOT_ECHOED else f"{shown(value)} ({kind})"
    return InputError(f"trace line field {name!r} must be {wanted}; got {got}. Pass {wanted}.")


def _checked_int(name: str, value: object) -> int | None:
    """An integer of any integer type (numpy's included) as an ``int``; None as None."""
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, SupportsIndex):
        try:  # numpy's bool has __index__, and it raises
            return operator.index(value)
        except TypeError:
            pass
    raise _refuse(name, value, "an integer or None")


def _checked_float(name: str, value: object) -> float | int | None:
    """A finite real number as itself (integers stay exact); non-finite or None as None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _refuse(name, value, "a number or None")
    if isinstance(value, numbers.Integral):
        return _checked_int(name, value)
    number = float(value)
    return number if math.isfinite(number) else None


def _checked_line(*values: Any) -> str:
    """The slow path of :func:`_line`: every field checked, numbers normalized.

    Integers of any integer type (numpy's included) are written as integers;
    non-finite floats as ``null``; a bool or string where a number belongs, or a
    non-string where a string belongs, raises :class:`~swayscope.errors.InputError`.
    Produces exactly what the fast path writes for the same values.
    """
    record: dict[str, Any] = {"schema": SCHEMA_VERSION}
    for name, value in zip(LINE_FIELDS[1:], values, strict=True):
        if name in _INT_FIELDS:
            record[name] = _checked_int(name, value)
        elif name in _FLOAT_FIELDS:
            record[name] = _checked_float(name, value)
        elif name == "hit":
            record[name] = bool(value)
        elif isinstance(value, str):
            record[name] = value
        elif value is None and name not in _REQUIRED_STR_FIELDS:
            record[name] = None
        else:
            wanted = "a string" if name in _REQUIRED_STR_FIELDS else "a string or None"
            raise _refuse(name, value, wanted)
    if record["prompt"] is None:
        del record["prompt"]
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


@dataclass(slots=True)
class _TraceEvent:
    """One trace line. The first eight fields are v0's; the rest were added."""

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
    adapter: str | None = None
    tier: str | None = None
    """Where a hit came from: ``memory`` or ``disk``; None for a miss."""


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


class TraceWriter(Exporter):
    """Append-only JSONL writer; ``TraceWriter(None)`` is a disabled no-op.

    The file is opened when the writer is built, so an unusable path fails
    before the first forward pass, not in the middle of a run.
    """

    name = "jsonl"

    def __init__(self, path: Path | str | None, *, source: str = "the trace path") -> None:
        self._path = Path(path) if path is not None else None
        self._source = source
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._adapters: dict[str, str] = {}
        """run_id → the adapter its RunStarted named (a sweep's runs, one per adapter)."""
        if self._path is not None:
            self._fd = self._open(self._path)

    def _fail(self, problem: str, exc: OSError | None = None) -> TracePathError:
        cause = f" ({exc.strerror or exc})" if exc is not None else ""
        return TracePathError(
            f"cannot append to trace file {str(self._path)!r} (from {self._source}): "
            f"{problem}{cause}."
        )

    def _refuse_kind(self, kind: str) -> TracePathError:
        return TracePathError(
            f"trace path {str(self._path)!r} is {kind}, not a regular file (from "
            f"{self._source}). Give the path of a regular file; it is created if missing."
        )

    def _open(self, path: Path) -> int:
        # open(2) on a FIFO blocks until a reader comes: look before opening, and open
        # non-blocking so a path swapped for a FIFO in between cannot block either.
        try:
            kind = _kind_of(os.stat(path).st_mode)
        except FileNotFoundError:
            kind = None
        except OSError as exc:
            raise self._fail("choose a writable path", exc) from exc
        if kind is not None:
            raise self._refuse_kind(kind)
        flags = os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # read access lets us check the last byte; a write-only file is fine too
                fd = os.open(path, flags | os.O_RDWR, 0o666)
            except PermissionError:
                fd = os.open(path, flags | os.O_WRONLY, 0o666)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened non-blocking
                raise self._refuse_kind("a FIFO (named pipe)") from exc
            raise self._fail("choose a writable path", exc) from exc
        try:
            st = os.fstat(fd)
            kind = _kind_of(st.st_mode)
            if kind is not None:
                raise self._refuse_kind(kind)
            os.set_blocking(fd, True)
            if st.st_size and not self._ends_with_newline(fd, st.st_size):
                self._write_whole(fd, b"\n")
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _ends_with_newline(fd: int, size: int) -> bool:
        try:
            return os.pread(fd, 1, size - 1) == b"\n"
        except OSError:  # opened write-only: a blank line is harmless, a glued one is not
            return False

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def write(self, event: _TraceEvent) -> None:
        """Append one line (v0 API). Values that would not make strict JSON are
        encoded correctly (numpy integers as integers, non-finite numbers as
        ``null``) or refused with :class:`~swayscope.errors.InputError`."""
        if self._fd is None:
            return
        self._append(
            _line(
                event.ts, event.probe, event.view_id, event.prompt_hash, event.top_k, event.op,
                event.wall_ms, event.hit, event.run_id, event.start_ts, event.view_kind,
                event.batch_id, event.batch_size, event.batch_wall_ms, event.n_tokens,
                event.trace_id, event.span_id, event.error, event.adapter, event.tier,
                event.prompt,
            )
        )

    def export(self, event: Event) -> None:
        if self._fd is None:
            return
        if type(event) is not CacheLookup:
            if type(event) is RunStarted:
                self._adapters[event.run_id] = event.adapter
            elif type(event) is RunEnded:
                self._adapters.pop(event.run_id, None)
            return
        start_ts = event.start_ns / 1e9
        self._append(
            _line(
                start_ts + event.duration_s, event.probe, event.view_id, event.prompt_hash,
                event.top_k, event.op, event.duration_s * 1000.0, event.hit, event.run_id,
                start_ts, event.view_kind, event.batch_id, event.batch_size,
                None if event.batch_duration_s is None else event.batch_duration_s * 1000.0,
                event.n_tokens, event.trace_id, event.span_id, event.error,
                self._adapters.get(event.run_id), event.tier, event.prompt,
            )
        )

    def _append(self, line: str) -> None:
        data = line.encode("ascii")  # every string in a line is \u-escaped
        with self._lock:
            if self._fd is not None:
                self._write_whole(self._fd, data)

    def _write_whole(self, fd: int, data: bytes) -> None:
        """One ``write(2)`` of ``data``; a short one is rolled back, then raises."""
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise self._fail("the line was not written", exc) from exc
        if written == len(data):
            return
        try:
            end = os.lseek(fd, 0, os.SEEK_CUR)  # O_APPEND: just past the bytes we wrote
            self._roll_back(fd, end - written, end)
        except OSError as exc:
            raise self._fail(
                f"only {written} of {len(data)} bytes were written and the partial line "
                "could not be removed", exc,
            ) from exc
        raise self._fail(
            f"only {written} of {len(data)} bytes could be written (disk full?); "
            "the partial line was removed"
        )

    def _roll_back(self, fd: int, start: int, end: int) -> None:
        """Remove our fragment at ``[start, end)`` without touching anyone else's bytes."""
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, start)
            return
        # Another writer appended after the fragment: blank it out in place, through a
        # descriptor without O_APPEND (on Linux pwrite on an O_APPEND one appends), on
        # the same file (not one that replaced it at our path since).
        assert self._path is not None
        blank = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            ours, theirs = os.fstat(fd), os.fstat(blank)
            if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
                os.pwrite(blank, b" " * (end - start - 1) + b"\n", start)
        finally:
            os.close(blank)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        # Lines are written straight to the kernel: nothing is buffered here.
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def shutdown(self) -> None:
        self.close()


__all__ = ["LINE_FIELDS", "SCHEMA_VERSION", "TraceWriter", "_TraceEvent"]
