"""Percentiles of a stream of numbers in bounded memory.

:class:`PercentileSketch` keeps the first :data:`EXACT_LIMIT` values and
answers exactly (linear interpolation between closest ranks, numpy's
default). Past that it moves to logarithmic buckets (the DDSketch idea): a
value ``v > 0`` falls in bucket ``ceil(log(v) / log(GAMMA))``, and reading a
bucket back as its midpoint is within :data:`RELATIVE_ERROR` of every value
in it, so a percentile is within that relative error of the true one (for
values between :data:`MIN_VALUE` and :data:`MAX_VALUE`; outside, values are
clamped to those bounds, and every answer to the exact minimum and maximum).
Memory: at most ``EXACT_LIMIT`` floats, then one fixed array of counts.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

#: Values kept as they are; percentiles are exact up to this many values.
EXACT_LIMIT = 2048
#: Relative accuracy of a percentile once the values went into buckets.
RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
#: Range the buckets cover without clamping (for milliseconds: 1 ns to about 11 days).
MIN_VALUE = 1e-6
MAX_VALUE = 1e9

_LOG_GAMMA = math.log(GAMMA)
_FIRST = math.ceil(math.log(MIN_VALUE) / _LOG_GAMMA)
_LAST = math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA)
#: Slot 0 counts values at or below MIN_VALUE (zero and negatives included).
_SLOTS = _LAST - _FIRST + 2


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), as numpy's default; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _slot(value: float) -> int:
    """Index in the counts array of the bucket that holds ``value``."""
    if value <= MIN_VALUE:
        return 0
    if value >= MAX_VALUE:
        return _SLOTS - 1
    return math.ceil(math.log(value) / _LOG_GAMMA) - _FIRST + 1


class PercentileSketch:
    """Percentiles of the values :meth:`add`-ed: exact for few, within 1% for many."""

    __slots__ = ("_counts", "_exact", "_max", "_min", "count")

    def __init__(self) -> None:
        self._exact: array[float] | None = array("d")
        self._counts: array[int] | None = None
        self._min = math.inf
        self._max = -math.inf
        self.count = 0

    @property
    def exact(self) -> bool:
        """Whether :meth:`percentile` answers exactly (no more than EXACT_LIMIT values)."""
        return self._exact is not None

    def add(self, value: float) -> None:
        self.count += 1
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        exact = self._exact
        if exact is not None:
            exact.append(value)
            if len(exact) > EXACT_LIMIT:
                self._to_buckets()
            return
        assert self._counts is not None
        self._counts[_slot(value)] += 1

    def _to_buckets(self) -> None:
        assert self._exact is not None
        values, self._exact = self._exact, None
        self._counts = counts = array("q", bytes(8 * _SLOTS))
        for value in values:
            counts[_slot(value)] += 1

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), numpy-style interpolation; 0 for no values."""
        if self._exact is not None:
            return percentile(self._exact, q)
        assert self._counts is not None
        cumulative = list(accumulate(self._counts))
        rank = (self.count - 1) * q / 100.0
        lo = math.floor(rank)
        hi = min(lo + 1, self.count - 1)
        at_lo, at_hi = (self._value_at(r, cumulative) for r in (lo, hi))
        return at_lo + (at_hi - at_lo) * (rank - lo)

    def _value_at(self, rank: int, cumulative: list[int]) -> float:
        """The ``rank``-th smallest value (0-based): exact at both ends, else its bucket's."""
        if rank == 0:
            return self._min
        if rank == self.count - 1:
            return self._max
        slot = bisect_right(cumulative, rank)
        if slot == 0:  # at or below MIN_VALUE: as low as the smallest value seen
            return self._min
        return min(max(2.0 * GAMMA ** (slot - 1 + _FIRST) / (GAMMA + 1.0), self._min), self._max)


__all__ = [
    "EXACT_LIMIT",
    "GAMMA",
    "MAX_VALUE",
    "MIN_VALUE",
    "RELATIVE_ERROR",
    "PercentileSketch",
    "percentile",
]
