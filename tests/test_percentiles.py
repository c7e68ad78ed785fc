"""Percentiles in bounded memory: exact for few values, within 1% for many."""

from __future__ import annotations

import numpy as np
import pytest

from swayscope.percentiles import EXACT_LIMIT, RELATIVE_ERROR, PercentileSketch, percentile

QS = (0, 1, 25, 50, 90, 95, 99, 100)


def sketch_of(values: list[float]) -> PercentileSketch:
    sketch = PercentileSketch()
    for v in values:
        sketch.add(v)
    return sketch


def test_percentile_matches_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 8.0, 13.0, 0.5]
    for q in QS:
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) == 0.0


def test_sketch_is_exact_up_to_the_limit() -> None:
    values = [float(v) for v in np.random.default_rng(0).lognormal(0, 2, EXACT_LIMIT)]
    sketch = sketch_of(values)
    assert sketch.exact and sketch.count == EXACT_LIMIT
    for q in QS:
        assert sketch.percentile(q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert PercentileSketch().percentile(50) == 0.0


@pytest.mark.parametrize(
    "dist",
    ["lognormal", "uniform", "zeros-and-exponential", "tiny", "constant"],
)
def test_sketch_is_within_relative_error_beyond_the_limit(dist: str) -> None:
    rng = np.random.default_rng(1)
    n = EXACT_LIMIT * 10
    values = {
        "lognormal": rng.lognormal(0, 2, n),
        "uniform": rng.uniform(0, 10, n),
        "zeros-and-exponential": np.concatenate([np.zeros(n // 2), rng.exponential(1, n // 2)]),
        "tiny": rng.lognormal(-6, 0.5, n),
        "constant": np.full(n, 3.25),
    }[dist].tolist()
    sketch = sketch_of(values)
    assert not sketch.exact
    for q in QS:
        want = float(np.percentile(values, q))
        assert abs(sketch.percentile(q) - want) <= RELATIVE_ERROR * abs(want) + 1e-6, q
    assert sketch.percentile(0) == min(values) and sketch.percentile(100) == max(values)


def test_sketch_clamps_values_outside_its_range_to_what_was_seen() -> None:
    values = [-5.0, 0.0, 1e-12, 5e12] * EXACT_LIMIT
    sketch = sketch_of(values)
    assert sketch.percentile(0) == -5.0 and sketch.percentile(100) == 5e12
    for q in QS:
        assert -5.0 <= sketch.percentile(q) <= 5e12
