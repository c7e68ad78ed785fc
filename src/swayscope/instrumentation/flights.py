"""Single flight: concurrent callers of a missing key wait for one compute of it.

Every lookup path goes through one table of the keys being computed now: a
caller that finds its key missing either claims it (and computes it) or waits
for the caller that did; ``cached`` and ``cached_batch`` alike, so two batches
and a single lookup of the same keys compute each key once. A thread that looks
up a key it is itself computing (a re-entrant compute) is told to compute it
again rather than wait for itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from swayscope.instrumentation.cache import _MISS, ForwardCache

Key = tuple[Any, ...]


@dataclass(slots=True)
class Flight:
    """A compute in progress that concurrent callers of the same key wait on."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    value: Any = None
    owner: int = field(default_factory=threading.get_ident)

    def finish(self, value: Any) -> None:
        """The compute succeeded (waiters are released by :meth:`Flights.land`)."""
        self.value, self.ok = value, True


def usable_value(value: Any, usable: Callable[[Any], bool] | None) -> Any:
    """``value``, or ``_MISS`` when it is one or ``usable`` refuses it."""
    if value is _MISS or usable is None or usable(value):
        return value
    return _MISS


@dataclass(slots=True)
class Claim:
    """What one claim over several keys found: values stored meanwhile, keys this caller
    computes (``lead``; those it claimed are in ``claimed``), keys to wait for."""

    stored: list[tuple[int, Any]] = field(default_factory=list)
    lead: list[int] = field(default_factory=list)
    claimed: list[tuple[Key, Flight]] = field(default_factory=list)
    waits: list[tuple[int, Flight]] = field(default_factory=list)


class Flights:
    """The keys being computed now, over one cache."""

    def __init__(self, cache: ForwardCache) -> None:
        self._cache = cache
        self._lock = threading.Lock()
        self._table: dict[Key, Flight] = {}

    def claim_one(
        self, key: Key, usable: Callable[[Any], bool] | None
    ) -> tuple[Any, Flight | None, bool]:
        """(the stored value or ``_MISS``, the flight to compute or wait on, whether this
        caller leads it)."""
        with self._lock:
            value = usable_value(self._cache.get(key), usable)
            if value is not _MISS:
                return value, None, False
            flight = self._table.get(key)
            if flight is None:
                flight = self._table[key] = Flight()
                return _MISS, flight, True
            return _MISS, flight, False

    def claim(self, keys: Sequence[tuple[int, Key]], usable: Callable[[Any], bool] | None) -> Claim:
        """Claim every missing key of ``keys`` (index, key) nobody computes yet."""
        claim = Claim()
        me = threading.get_ident()
        with self._lock:
            for i, key in keys:
                value = usable_value(self._cache.get(key), usable)
                if value is not _MISS:
                    claim.stored.append((i, value))
                    continue
                flight = self._table.get(key)
                if flight is None:
                    flight = self._table[key] = Flight()
                    claim.claimed.append((key, flight))
                    claim.lead.append(i)
                elif flight.owner == me:
                    claim.lead.append(i)  # re-entrant: this thread computes it already
                else:
                    claim.waits.append((i, flight))
        return claim

    def land(self, flights: Sequence[tuple[Key, Flight]]) -> None:
        """The computes of ``flights`` are over (done or failed): release their waiters."""
        with self._lock:
            for key, flight in flights:
                if self._table.get(key) is flight:
                    del self._table[key]
        for _, flight in flights:
            flight.done.set()


__all__ = ["Claim", "Flight", "Flights", "Key", "usable_value"]
