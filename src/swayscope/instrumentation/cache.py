"""Bounded LRU for forward-pass results, keyed on ``(op, view_id, prompt digest, top_k)``.

Bounded by entry count and, optionally, by bytes. Values are measured, not
guessed (:func:`measure_bytes`), and arrays inside them are made read-only on
the way in, so one caller cannot corrupt what the next caller is handed.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from typing import Any

from swayscope.errors import ConfigError

#: Tells a miss apart from a stored ``None``: ``cache.get(key) is _MISS``.
_MISS: Any = object()


def measure_bytes(value: Any, _seen: set[int] | None = None) -> int:
    """Approximate retained size of ``value``: arrays by ``nbytes``, containers recursively."""
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int) and hasattr(value, "shape"):
        return nbytes + 112
    size = sys.getsizeof(value)
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return size
    if isinstance(value, dict):
        return size + sum(measure_bytes(k, seen) + measure_bytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return size + sum(measure_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return size + sum(
            measure_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value)
        )
    return size


def freeze(value: Any) -> Any:
    """Make numpy-like arrays in ``value`` read-only, in place; returns ``value``."""
    flags = getattr(value, "flags", None)
    if flags is not None and hasattr(flags, "writeable"):
        flags.writeable = False
    elif isinstance(value, (list, tuple)):
        for item in value:
            freeze(item)
    elif isinstance(value, dict):
        for item in value.values():
            freeze(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            freeze(getattr(value, f.name))
    return value


class ForwardCache:
    """Thread-safe LRU bounded by ``maxsize`` entries and optionally ``max_bytes``."""

    def __init__(self, maxsize: int = 256, max_bytes: int | None = None) -> None:
        if maxsize <= 0:
            raise ConfigError(f"maxsize must be positive; got {maxsize}. Use at least 1.")
        if max_bytes is not None and max_bytes <= 0:
            raise ConfigError(
                f"cache_max_bytes must be positive; got {max_bytes}. Omit it for no byte limit."
            )
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._store: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._lock = threading.Lock()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def max_bytes(self) -> int | None:
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """Measured bytes of all stored values."""
        return self._bytes

    @property
    def evictions(self) -> int:
        return self._evictions

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            try:
                value, _ = self._store[key]
            except KeyError:
                return _MISS
            self._store.move_to_end(key)
            return value

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        freeze(value)
        size = measure_bytes(value)
        with self._lock:
            old = self._store.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if self._max_bytes is not None and size > self._max_bytes:
                # Storing it would evict everything and still not fit.
                self._evictions += 1
                return
            self._store[key] = (value, size)
            self._bytes += size
            while len(self._store) > self._maxsize or (
                self._max_bytes is not None and self._bytes > self._max_bytes
            ):
                _, (_, evicted) = self._store.popitem(last=False)
                self._bytes -= evicted
                self._evictions += 1

    def keys(self) -> list[tuple[Any, ...]]:
        """A snapshot of the keys, least recently used first."""
        with self._lock:
            return list(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._store

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
            self._bytes = 0


__all__ = ["_MISS", "ForwardCache", "freeze", "measure_bytes"]
