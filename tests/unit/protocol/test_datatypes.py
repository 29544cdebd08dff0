import numpy as np
import pytest

from modelfleet.errors import BadRequest
from modelfleet.protocol.datatypes import DATATYPES, datatype, datatype_of, deserialize_bytes, serialize_bytes


def test_every_fixed_datatype_maps_to_its_numpy_size() -> None:
    for name, dt in DATATYPES.items():
        if name == "BYTES":
            assert dt.is_bytes
        else:
            assert dt.itemsize == np.dtype(dt.dtype).itemsize
            assert datatype_of(np.zeros(1, dt.dtype)) == name


def test_unknown_and_bf16_datatypes_are_named_in_the_error() -> None:
    with pytest.raises(BadRequest, match="unknown datatype 'FLOAT'"):
        datatype("FLOAT")
    with pytest.raises(BadRequest, match="BF16 is not supported"):
        datatype("BF16")


def test_bytes_round_trip_with_str_and_bytes_elements() -> None:
    array = np.array([b"abc", "d\u00e9", b""], dtype=object)
    raw = serialize_bytes(array)
    assert raw == b"\x03\x00\x00\x00abc\x03\x00\x00\x00d\xc3\xa9\x00\x00\x00\x00"
    assert list(deserialize_bytes(raw, 3, "x")) == [b"abc", "d\u00e9".encode(), b""]


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x03\x00\x00\x00abc", 2, "BYTES data of 7 bytes cannot hold 2 elements"),
        (b"\x00\x00\x00\x00\x04\x00\x00\x00abcd", 3, "holds 2 elements, expected 3"),
        (b"\x09\x00\x00\x00abc", 1, "claims 9 bytes, only 3 left"),
        (b"\x01\x00\x00\x00ab", 1, "1 bytes after its 1 elements"),
        (b"\x01\x00", 1, "BYTES data of 2 bytes cannot hold 1 elements"),
    ],
)
def test_malformed_bytes_buffers_are_refused(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        deserialize_bytes(raw, count, "input 'x'")
