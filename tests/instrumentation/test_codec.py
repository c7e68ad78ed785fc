"""Cached values to bytes and back, bit for bit; nothing but registered types comes back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from swayscope.backends.api import RollingLogprob, TokenDist
from swayscope.instrumentation import codec


def same(a: object, b: object) -> bool:
    """Equal bit for bit: arrays by bytes, dtype and shape; floats by their hex form."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, float):
        return isinstance(b, float) and a.hex() == b.hex()
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(
            same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__
        )
    return type(a) is type(b) and a == b


VALUES = [
    None, True, 0, -(2**70), 1.5, -0.0, math.inf, -math.inf, 5e-324, "text ünïcode", b"\x00\xff",
    [1, 2.5, "x"], (1, (2, None)), {"a": [1.0], "b": {"c": b"z"}},
    np.float64(math.pi), np.int32(-7), np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([], dtype=np.int64), np.array([math.nan, -0.0, 1e-310]),
    TokenDist(np.array([5, 1], dtype=np.int64), np.array([-0.25, -3.5]), 1024, -1e-300, 9),
    RollingLogprob(np.array([1, 2, 3], dtype=np.int64), np.array([-1.0, -2.0, -3.0]), 4),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_every_kept_value_round_trips_bit_for_bit(value: object) -> None:
    back = codec.decode(codec.encode(value))
    assert same(value, back)
    if isinstance(back, np.ndarray):
        assert not back.flags.writeable  # handed out read-only, as the memory cache does


def test_nan_keeps_its_bits() -> None:
    odd = np.array([np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", dtype=np.float64)[0]])
    assert codec.decode(codec.encode(odd)).tobytes() == odd.tobytes()


def test_only_registered_types_are_kept_and_built() -> None:
    @dataclass(frozen=True)
    class Unknown:
        x: int

    with pytest.raises(TypeError, match="not registered"):
        codec.encode(Unknown(1))
    with pytest.raises(TypeError):
        codec.encode(object())
    with pytest.raises(TypeError):
        codec.encode(np.array([object()]))
    forged = codec.encode(TokenDist(np.array([1]), np.array([0.0]), 2, -1.0)).replace(
        b"swayscope.backends.api:TokenDist", b"subprocess:Popen" + b" " * 16
    )
    with pytest.raises(codec.CodecError):
        codec.decode(forged)


@pytest.mark.parametrize(
    "data",
    [b"", b"SWC1", b"XXXX\x02\x00\x00\x00{}", b"SWC1\x05\x00\x00\x00{bad}",
     b'SWC1\x20\x00\x00\x00{"a":0,"d":"<f8","s":[100]}       '],
)
def test_damaged_bytes_are_a_codec_error(data: bytes) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(data)
