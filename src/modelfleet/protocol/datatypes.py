"""V2 tensor datatypes: names, numpy dtypes, element sizes, and the BYTES wire format.

BYTES tensors travel as numpy object arrays of `bytes`; on the wire (binary extension, gRPC raw
contents) each element is a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from modelfleet.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Datatype:
    name: str
    dtype: np.dtype  # object dtype for BYTES
    itemsize: int  # 0 for BYTES (variable)
    json_kinds: str  # numpy kinds accepted from JSON numbers/booleans; "" = not allowed as JSON

    @property
    def is_bytes(self) -> bool:
        return self.itemsize == 0


def _dt(name: str, np_name: str, json_kinds: str) -> Datatype:
    dtype = np.dtype(np_name)
    return Datatype(name, dtype, 0 if dtype.kind == "O" else dtype.itemsize, json_kinds)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", "bool", "b"),
        _dt("UINT8", "uint8", "iu"),
        _dt("UINT16", "uint16", "iu"),
        _dt("UINT32", "uint32", "iu"),
        _dt("UINT64", "uint64", "iu"),
        _dt("INT8", "int8", "iu"),
        _dt("INT16", "int16", "iu"),
        _dt("INT32", "int32", "iu"),
        _dt("INT64", "int64", "iu"),
        _dt("FP16", "float16", ""),  # JSON numbers would lose precision silently: binary only
        _dt("FP32", "float32", "iuf"),
        _dt("FP64", "float64", "iuf"),
        _dt("BYTES", "object", ""),
    )
}

_BY_DTYPE = {d.dtype: d.name for d in DATATYPES.values() if not d.is_bytes}


def datatype(name: str) -> Datatype:
    """The Datatype for a V2 name, or 400 naming the unknown name."""
    try:
        return DATATYPES[name]
    except KeyError:
        if name == "BF16":
            raise BadRequest("datatype BF16 is not supported by this server") from None
        raise BadRequest(f"unknown datatype '{name}'; expected one of {', '.join(DATATYPES)}") from None


def datatype_of(array: np.ndarray) -> str:
    """The V2 name for a numpy array's dtype (object and string arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_DTYPE[array.dtype]
    except KeyError:
        raise BadRequest(f"numpy dtype {array.dtype} has no V2 datatype") from None


_LEN = struct.Struct("<I")


def deserialize_bytes(buf: memoryview | bytes, count: int, what: str) -> np.ndarray:
    """Split a length-prefixed BYTES buffer into exactly `count` elements (400 otherwise)."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    if count * _LEN.size > end:  # checked before allocating: each element needs its 4-byte length
        raise BadRequest(
            f"{what}: BYTES data of {end} bytes cannot hold {count} elements (4 bytes of length each at least)"
        )
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise BadRequest(f"{what}: BYTES data holds {i} elements, expected {count}")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > end:
            raise BadRequest(f"{what}: BYTES element {i} claims {n} bytes, only {end - pos} left")
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != end:
        raise BadRequest(f"{what}: BYTES data has {end - pos} bytes after its {count} elements")
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    """Length-prefix every element of a BYTES array (str elements are UTF-8 encoded)."""
    parts: list[bytes] = []
    for item in array.ravel():
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
