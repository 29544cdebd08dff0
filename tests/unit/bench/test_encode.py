import numpy as np
import orjson
import pytest

from modelfleet.bench.encode import (
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
    binary_body,
    body_from_file,
    json_body,
)
from modelfleet.bench.spec import Encoding
from modelfleet.bench.synth import Tensor
from modelfleet.protocol.datatypes import deserialize_bytes

FLOATS = Tensor("x", "FP32", np.arange(6, dtype=np.float32).reshape(2, 3) / 4)
IDS = Tensor("ids", "INT64", np.array([[1, 2, 3]], dtype=np.int64))
TEXT = Tensor("text", "BYTES", np.array([b"ab", b"cde"], dtype=object))


def test_json_body() -> None:
    body = json_body([FLOATS, IDS, TEXT])
    assert body.content_type == JSON_TYPE
    assert body.headers() == [("Content-Type", JSON_TYPE)]
    doc = orjson.loads(body.content)
    assert doc["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]},
        {"name": "ids", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["ab", "cde"]},
    ]


def test_json_cannot_carry_fp16() -> None:
    with pytest.raises(ValueError, match="use --encoding binary"):
        json_body([Tensor("h", "FP16", np.zeros(2, dtype=np.float16))])


def test_binary_body_layout() -> None:
    body = binary_body([FLOATS, IDS, TEXT])
    assert body.content_type == BINARY_TYPE
    assert body.header_length is not None
    assert (HEADER_LENGTH, str(body.header_length)) in body.headers()
    header = orjson.loads(body.content[: body.header_length])
    assert header["parameters"] == {"binary_data_output": True}
    sizes = [i["parameters"]["binary_data_size"] for i in header["inputs"]]
    assert sizes == [24, 24, 4 + 2 + 4 + 3]
    assert all("data" not in i for i in header["inputs"])
    assert len(body.content) == body.header_length + sum(sizes)

    raw = memoryview(body.content)[body.header_length :]
    np.testing.assert_array_equal(np.frombuffer(raw[:24], dtype="<f4").reshape(2, 3), FLOATS.data)
    np.testing.assert_array_equal(np.frombuffer(raw[24:48], dtype="<i8").reshape(1, 3), IDS.data)
    assert deserialize_bytes(raw[48:], 2, "text").tolist() == [b"ab", b"cde"]


def test_binary_keeps_other_request_fields() -> None:
    body = binary_body([IDS], {"id": "r1", "parameters": {"priority": 2}})
    assert body.header_length is not None
    header = orjson.loads(body.content[: body.header_length])
    assert header["id"] == "r1"
    assert header["parameters"] == {"priority": 2, "binary_data_output": True}


REQUEST = (
    b'{"id": "q", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}'
)


def test_input_file_is_sent_as_is_in_json() -> None:
    body = body_from_file(REQUEST, Encoding.JSON)
    assert body.content == REQUEST
    assert body.header_length is None


def test_input_file_converts_to_binary() -> None:
    body = body_from_file(REQUEST, Encoding.BINARY)
    assert body.header_length is not None
    header = orjson.loads(body.content[: body.header_length])
    assert header["id"] == "q"
    assert header["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}}
    ]
    data = np.frombuffer(body.content[body.header_length :], dtype="<f4")
    assert data.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "an object with an 'inputs' list"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1]}]}', "1 values for shape"),
        (b'{"inputs": [{"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}]}', "unknown datatype"),
    ],
)
def test_bad_input_files(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        body_from_file(raw, Encoding.BINARY)
