"""The durable tier under the in-memory cache: SQLite (WAL) in one file, shared by processes.

A memory miss is looked up here (a batch of misses in one query) before the model
computes it; what the model computes is written here by a background thread, in
batches, so a forward call never waits on the disk for more than a lookup. Keys are
digests of the memory key with the *content* fingerprint of the model state in place
of its name (the backend's :meth:`~.core.Instrumentation.fingerprint`), so a file
replaced under the same name misses and the same weights under another path hit.
Values are written by :mod:`.codec` (exact, no pickle).

Safe by construction:

- two processes on one file (two runs, a sweep beside a run): WAL, short write
  transactions, a busy timeout; a value is in the file whole or not at all;
- SIGKILL loses at most the batch not yet written;
- a corrupt or foreign file: one warning, set aside (``*.corrupt-<time>``), rebuilt;
- a full disk (or any write failure): one warning, the run goes on with memory only;
- the file and its directory are the user's alone (600 and 700); no prompt text, only
  digests; bounded in bytes (``max_bytes``), least recently used entries evicted.

Also kept here: file digests by (path, size, mtime_ns, inode), so a large model is hashed
once (:meth:`DiskCache.file_digest`), and the runs that used the file (for resuming:
:meth:`DiskCache.unfinished_run`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swayscope.errors import ConfigError
from swayscope.instrumentation import codec

log = logging.getLogger(__name__)

FILE_NAME = "forward-cache.sqlite"
#: Held (flock) while a process opens, checks, sets aside or creates the file: a process
#: that looks at a file another is still creating must not take it for a foreign one.
LOCK_NAME = "forward-cache.lock"
#: The default bound of the file, in bytes (documented in the README).
DEFAULT_DISK_CACHE_BYTES = 2 * 1024**3
#: Bumped whenever what swayscope computes for the same inputs changes (a numeric fix):
#: every older entry then misses.
NUMERIC_FORMAT = 1
#: 'SWAY': a SQLite file swayscope wrote.
_APPLICATION_ID = 0x53574159
_SCHEMA_VERSION = 1
#: Entries written per transaction, and how long the writer waits for more.
_WRITE_BATCH = 256
_WRITE_DELAY_S = 0.25
#: An eviction brings the file down to this share of its bound.
_EVICT_TO = 0.9
_BUSY_TIMEOUT_MS = 5000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, size INTEGER NOT NULL, used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('bytes', 0), ('entries', 0), ('evictions', 0);
CREATE TABLE IF NOT EXISTS files (
    path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns, inode)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, plan TEXT NOT NULL, status TEXT NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, started REAL NOT NULL, trace_id TEXT, span_id TEXT
);
"""


def key_digest(parts: Iterable[object]) -> bytes:
    """The on-disk key of a memory key whose model part is a content fingerprint: a digest
    of its parts, each tagged with its type, and of the numeric format."""
    h = hashlib.sha256(f"swayscope-cache/{NUMERIC_FORMAT}".encode())
    for part in parts:
        if isinstance(part, bytes):
            h.update(b"\x00b" + len(part).to_bytes(4, "little") + part)
        else:
            text = repr(part).encode()
            h.update(b"\x00" + type(part).__name__.encode() + len(text).to_bytes(4, "little"))
            h.update(text)
    return h.digest()


@dataclass(frozen=True, slots=True)
class DiskStats:
    """The file as this process last saw it, and what this process did with it."""

    entries: int
    nbytes: int
    evictions: int
    written: int
    write_failures: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class UnfinishedRun:
    """A run of the same plan that started and never finished (killed, stopped)."""

    run_id: str
    started: float
    trace_id: str | None
    span_id: str | None


class _Unusable(Exception):
    """The file is corrupt or not ours."""


class DiskCache:
    """One cache file in ``directory`` (created 700), at most ``max_bytes`` bytes.

    ``listener`` is told the file's state after each batch the writer commits (from the
    writer's thread).
    """

    def __init__(
        self,
        directory: Path | str,
        max_bytes: int = DEFAULT_DISK_CACHE_BYTES,
        *,
        listener: Callable[[DiskStats], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ConfigError(
                f"the disk cache bound must be positive; got {max_bytes} bytes. "
                "Turn the disk cache off with --no-disk-cache instead."
            )
        self.directory = Path(directory).expanduser()
        self.path = self.directory / FILE_NAME
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._queue: dict[bytes, bytes] = {}
        self._touched: set[bytes] = set()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._written = 0
        self._failures = 0
        self._warned: set[str] = set()
        self.enabled = True
        self.listener = listener
        self._state = DiskStats(0, 0, 0, 0, 0, True)
        self._writer_db: sqlite3.Connection | None = None
        self._open()
        self._thread = threading.Thread(target=self._write_loop, name="swayscope-disk-cache",
                                        daemon=True)
        self._thread.start()

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return db

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
            lock = os.open(self.directory / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self.path.exists():
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                try:
                    self._writer_db = self._prepare(self._connect())
                except (_Unusable, sqlite3.DatabaseError) as exc:
                    self._set_aside(exc)
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                    self._writer_db = self._prepare(self._connect())
            finally:
                os.close(lock)  # closing releases the flock
            for suffix in ("", "-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.chmod(side, 0o600)
        except (OSError, sqlite3.Error, _Unusable) as exc:
            self._disable("open", f"cannot open the disk cache {str(self.path)!r} ({exc})")
            return
        self._state = self._read_state(self._writer_db)

    def _prepare(self, db: sqlite3.Connection) -> sqlite3.Connection:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != _APPLICATION_ID and tables:
            db.close()
            raise _Unusable(f"application id {app:#x} is not swayscope's")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if tables and version != _SCHEMA_VERSION:
            db.close()
            raise _Unusable(f"schema version {version}, expected {_SCHEMA_VERSION}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        return db

    def _set_aside(self, exc: BaseException) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.warning(
            "the disk cache %r is corrupt or not swayscope's (%s): set aside as %r and "
            "started anew", str(self.path), exc, str(aside),
        )
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{aside}{suffix}"))

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s; the run goes on with the memory cache only", message)

    def _disable(self, what: str, message: str) -> None:
        self.enabled = False
        self._warn_once(what, message)

    # -- lookups -----------------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Any]:
        """The stored values of ``keys`` (one query); unreadable entries are misses."""
        if not self.enabled or not keys:
            return {}
        found: dict[bytes, Any] = {}
        try:
            db = self._reader()
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT key, value FROM entries WHERE key IN ({marks})", part
                ).fetchall()
                for key, blob in rows:
                    try:
                        found[bytes(key)] = codec.decode(bytes(blob))
                    except codec.CodecError:
                        continue  # written by another version or damaged: a miss
        except sqlite3.Error as exc:
            self._disable("read", f"reading the disk cache {str(self.path)!r} failed ({exc})")
            return {}
        if found:
            with self._lock:
                self._touched.update(found)
        return found

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: bytes, value: Any) -> None:
        """Queue ``value`` for the writer; a value the codec cannot keep is not stored."""
        if not self.enabled or self._closed:
            return
        try:
            blob = codec.encode(value)
        except TypeError as exc:
            self._warn_once("encode", f"a {type(value).__name__} cannot go to the disk cache "
                                      f"({exc})")
            return
        with self._lock:
            self._queue[key] = blob
            self._idle.clear()
            full = len(self._queue) >= _WRITE_BATCH
        if full:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything queued; True when it is on disk within ``timeout_s``."""
        if not self.enabled:
            return True
        self._wake.set()
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush (bounded) and stop the writer. Idempotent."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _write_loop(self) -> None:
        while True:
            self._wake.wait(_WRITE_DELAY_S)
            self._wake.clear()
            with self._lock:
                batch, self._queue = self._queue, {}
                touched, self._touched = self._touched, set()
            if (batch or touched) and self.enabled:
                self._write(batch, touched)
            with self._lock:
                if not self._queue:
                    self._idle.set()
            if self._closed and not self._queue:
                db, self._writer_db = self._writer_db, None
                if db is not None:
                    db.close()
                return

    def _write(self, batch: dict[bytes, bytes], touched: set[bytes]) -> None:
        db = self._writer_db
        if db is None:
            return
        now = time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            old = present = 0
            keys = list(batch)
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                marks = ",".join("?" * len(part))
                n, size = db.execute(
                    f"SELECT count(*), coalesce(sum(size), 0) FROM entries WHERE key IN ({marks})",
                    part,
                ).fetchone()
                present, old = present + n, old + size
            db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                [(k, v, len(v), now) for k, v in batch.items()],
            )
            added = sum(len(v) for v in batch.values()) - old
            db.execute("UPDATE meta SET value = value + ? WHERE name = 'bytes'", (added,))
            db.execute(
                "UPDATE meta SET value = value + ? WHERE name = 'entries'", (len(batch) - present,)
            )
            touch = [(now, k) for k in touched if k not in batch]
            db.executemany("UPDATE entries SET used = ? WHERE key = ?", touch)
            total = db.execute("SELECT value FROM meta WHERE name = 'bytes'").fetchone()[0]
            if total > self.max_bytes:
                _evict(db, int(self.max_bytes * _EVICT_TO))
            db.execute("COMMIT")
            self._written += len(batch)
            self._state = self._read_state(db)
        except sqlite3.Error as exc:
            self._failures += len(batch)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            reason = "the disk is full" if "full" in str(exc).lower() else str(exc)
            self._disable("write", f"writing the disk cache {str(self.path)!r} failed: {reason}")

    # -- what is in the file ------------------------------------------------------------------

    def _read_state(self, db: sqlite3.Connection | None) -> DiskStats:
        """The file's entries, bytes and evictions (kept in its ``meta`` table, so reading
        them costs one query), and what this process wrote; told to the listener."""
        meta: dict[str, int] = {}
        if db is not None and self.enabled:
            try:
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            except sqlite3.Error as exc:
                self._disable("read", f"reading the disk cache {str(self.path)!r} failed ({exc})")
        state = DiskStats(
            int(meta.get("entries", 0)), int(meta.get("bytes", 0)), int(meta.get("evictions", 0)),
            self._written, self._failures, self.enabled,
        )
        listener = self.listener
        if listener is not None:
            listener(state)
        return state

    @property
    def state(self) -> DiskStats:
        """The file's state as the writer last saw it (no query)."""
        return self._state

    def stats(self) -> DiskStats:
        """The file's state now (one query)."""
        if not self.enabled:
            return DiskStats(0, 0, 0, self._written, self._failures, False)
        return self._read_state(self._reader())

    def prune(self, max_bytes: int) -> int:
        """Evict least recently used entries until the file holds at most ``max_bytes``;
        how many were evicted."""
        db = self._reader()
        db.execute("BEGIN IMMEDIATE")
        try:
            evicted = _evict(db, max(0, max_bytes))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return evicted

    def clear(self) -> None:
        """Remove every entry (file digests and runs are kept)."""
        db = self._reader()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM entries")
        db.execute("UPDATE meta SET value = 0 WHERE name IN ('bytes', 'entries')")
        db.execute("COMMIT")
        db.execute("VACUUM")

    # -- file digests ---------------------------------------------------------------------------

    def file_digest(self, path: Path) -> str:
        """SHA-256 of ``path``'s bytes, hashed once per (path, size, mtime_ns, inode)."""
        st = path.stat()
        ident = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if self.enabled:
            try:
                row = self._reader().execute(
                    "SELECT digest FROM files WHERE path = ? AND size = ? AND mtime_ns = ? "
                    "AND inode = ?", ident,
                ).fetchone()
                if row is not None:
                    return str(row[0])
            except sqlite3.Error:
                pass
        digest = hash_file(path)
        if self.enabled:
            try:
                self._reader().execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", (*ident, digest)
                )
            except sqlite3.Error as exc:
                log.debug("could not remember the digest of %s: %s", path, exc)
        return digest

    # -- runs, for resuming -----------------------------------------------------------------------

    def start_run(self, run_id: str, plan: str, trace_id: str | None,
                  span_id: str | None) -> None:
        """Record that ``run_id`` (of the plan digest ``plan``) is running here."""
        self._runs("INSERT OR REPLACE INTO runs VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                   (run_id, plan, socket.gethostname(), os.getpid(), time.time(), trace_id,
                    span_id))

    def end_run(self, run_id: str, status: str) -> None:
        self._runs("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))

    def unfinished_run(self, plan: str) -> UnfinishedRun | None:
        """The latest run of ``plan`` that never finished and is not running now."""
        if not self.enabled:
            return None
        try:
            rows = self._reader().execute(
                "SELECT run_id, host, pid, started, trace_id, span_id FROM runs WHERE plan = ? "
                "AND status NOT IN ('ok', 'resumed') ORDER BY started DESC LIMIT 8",
                (plan,),
            ).fetchall()
        except sqlite3.Error:
            return None
        host = socket.gethostname()
        for run_id, run_host, pid, started, trace_id, span_id in rows:
            if run_host == host and pid != os.getpid() and _alive(pid):
                continue  # running beside this one, not stopped
            return UnfinishedRun(run_id, started, trace_id, span_id)
        return None

    def _runs(self, sql: str, args: tuple[Any, ...]) -> None:
        if not self.enabled:
            return
        try:
            self._reader().execute(sql, args)
        except sqlite3.Error as exc:
            log.debug("could not record the run: %s", exc)


def _evict(db: sqlite3.Connection, target: int) -> int:
    """Drop the least recently used entries until the file holds at most ``target`` bytes
    (in the caller's transaction); how many were dropped."""
    total = db.execute("SELECT value FROM meta WHERE name = 'bytes'").fetchone()[0]
    evicted = 0
    while total > target:
        rows = db.execute("SELECT key, size FROM entries ORDER BY used LIMIT 256").fetchall()
        if not rows:
            break
        drop = []
        for key, size in rows:
            if total <= target:
                break
            drop.append((key,))
            total -= size
        db.executemany("DELETE FROM entries WHERE key = ?", drop)
        evicted += len(drop)
    db.execute("UPDATE meta SET value = ? WHERE name = 'bytes'", (max(0, total),))
    db.execute("UPDATE meta SET value = value + ? WHERE name = 'evictions'", (evicted,))
    db.execute("UPDATE meta SET value = value - ? WHERE name = 'entries'", (evicted,))
    return evicted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "DEFAULT_DISK_CACHE_BYTES",
    "FILE_NAME",
    "NUMERIC_FORMAT",
    "DiskCache",
    "DiskStats",
    "UnfinishedRun",
    "hash_file",
    "key_digest",
]
