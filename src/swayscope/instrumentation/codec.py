"""Cached values as bytes and back, bit for bit, without pickle.

What the durable cache (:mod:`.disk_cache`) stores: ``None``, booleans, integers,
floats (by their exact hex form, NaN and infinities included), strings, bytes,
lists, tuples, string-keyed dicts, numpy arrays (raw bytes, dtype and shape
kept) and numpy scalars, and instances of the dataclasses a backend registered
(:func:`durable`). Decoding builds only those: a foreign or tampered file can
make a lookup miss (:class:`CodecError`), never run code.

Layout: ``MAGIC``, the header's length (4 bytes), a JSON header describing the
value with arrays by index, then each array's bytes in order.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from swayscope.errors import SwayscopeError

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"SWC1"
_LEN = struct.Struct("<I")
_TYPES: dict[str, type] = {}

C = TypeVar("C", bound=type)


class CodecError(SwayscopeError, ValueError):
    """Bytes that are not a value this codec wrote (corrupt, foreign or from a type no
    longer registered): the entry is a miss."""


def durable(cls: C) -> C:
    """Register a dataclass whose instances may be cached on disk (a class decorator)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} is not a dataclass")
    _TYPES[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return cls


def _name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: Any) -> bytes:
    """``value`` as bytes; :class:`TypeError` for a value this codec cannot keep exactly."""
    import numpy as np  # here, not at import: `import swayscope.instrumentation` stays light

    arrays: list[bytes] = []

    def enc(v: Any) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.generic):
            return {"g": v.dtype.str, "x": v.tobytes().hex()}
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return {"f": v.hex()}
        if isinstance(v, bytes):
            return {"b": v.hex()}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise TypeError("arrays of Python objects cannot be cached on disk")
            arrays.append(np.ascontiguousarray(v).tobytes())
            return {"a": len(arrays) - 1, "d": v.dtype.str, "s": list(v.shape)}
        if isinstance(v, list):
            return {"l": [enc(x) for x in v]}
        if isinstance(v, tuple):
            return {"t": [enc(x) for x in v]}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError("only dicts with string keys can be cached on disk")
            return {"m": {k: enc(x) for k, x in v.items()}}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            name = _name_of(type(v))
            if _TYPES.get(name) is not type(v):
                raise TypeError(f"{name} is not registered with swayscope's codec (durable)")
            fields = {f.name: enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
            return {"c": name, "v": fields}
        raise TypeError(f"a {type(v).__name__} cannot be cached on disk")

    header = json.dumps(enc(value), separators=(",", ":")).encode()
    return b"".join((MAGIC, _LEN.pack(len(header)), header, *arrays))


def decode(data: bytes) -> Any:
    """The value :func:`encode` made of ``data``; :class:`CodecError` otherwise."""
    import numpy as np

    if data[:4] != MAGIC or len(data) < 8:
        raise CodecError("not a swayscope cache value")
    (n,) = _LEN.unpack_from(data, 4)
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise CodecError(f"unreadable value header: {exc}") from None
    view = memoryview(data)[8 + n :]
    offset = 0

    def array(spec: dict[str, Any]) -> np.ndarray[Any, Any]:
        nonlocal offset
        dtype = np.dtype(spec["d"])
        if dtype.hasobject:
            raise CodecError("object arrays are never stored")
        shape = tuple(int(x) for x in spec["s"])
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + size > len(view):
            raise CodecError("a value's array is cut short")
        out = np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
        return out

    def dec(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if not isinstance(v, dict) or len(v) not in (1, 2, 3):
            raise CodecError("malformed value header")
        if "f" in v:
            return float.fromhex(v["f"])
        if "g" in v:
            return np.frombuffer(bytes.fromhex(v["x"]), dtype=np.dtype(v["g"]))[0]
        if "b" in v:
            return bytes.fromhex(v["b"])
        if "a" in v:
            return array(v)
        if "l" in v:
            return [dec(x) for x in v["l"]]
        if "t" in v:
            return tuple(dec(x) for x in v["t"])
        if "m" in v:
            return {str(k): dec(x) for k, x in v["m"].items()}
        if "c" in v:
            cls = _TYPES.get(str(v["c"]))
            if cls is None:
                raise CodecError(f"{v['c']} is not a type swayscope caches")
            build: Callable[..., Any] = cls
            return build(**{str(k): dec(x) for k, x in v["v"].items()})
        raise CodecError("malformed value header")

    try:
        value = dec(header)
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CodecError(f"malformed value: {type(exc).__name__}: {exc}") from None
    if offset != len(view):
        raise CodecError("a value has trailing bytes")
    return value


__all__ = ["MAGIC", "CodecError", "decode", "durable", "encode"]
