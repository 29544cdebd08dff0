import json
import re
from typing import Any

import numpy as np
import pytest

from modelfleet.errors import BadRequest
from modelfleet.protocol.rest import Limits, decode_request, encode_response, header_length
from modelfleet.protocol.v2 import InferOutput, InferRequest, InferResponse, RequestedOutput

LIMITS = Limits(max_inputs=4, max_rank=4, max_elements=1000)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def tensor(
    name: str = "x", shape: Any = (1, 2), datatype: str = "FP32", data: Any = (1, 2), **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "shape": list(shape), "datatype": datatype, **extra}
    if data is not None:
        out["data"] = list(data) if isinstance(data, tuple) else data
    return out


def binary_body(inputs: list[dict[str, Any]], blobs: list[bytes], **top: Any) -> tuple[bytes, int]:
    header = body({"inputs": inputs, **top})
    return header + b"".join(blobs), len(header)


def bad(raw: bytes, message: str, json_length: int | None = None) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_request(raw, json_length, LIMITS)


# -- JSON tensors --------------------------------------------------------------------------------------


def test_flat_and_nested_json_data_give_the_same_array() -> None:
    flat = decode_request(body({"inputs": [tensor(shape=(2, 2), data=[1, 2, 3, 4])]}), None, LIMITS)
    nested = decode_request(body({"inputs": [tensor(shape=(2, 2), data=[[1, 2], [3, 4]])]}), None, LIMITS)
    for request in (flat, nested):
        array = request.inputs[0].data
        assert array.dtype == np.float32
        assert array.shape == (2, 2)
        np.testing.assert_array_equal(array, [[1, 2], [3, 4]])


def test_integers_booleans_and_strings_from_json() -> None:
    request = decode_request(
        body(
            {
                "inputs": [
                    tensor("i", (3,), "INT64", [1, -2, 3]),
                    tensor("b", (2,), "BOOL", [True, False]),
                    tensor("s", (1, 2), "BYTES", [["h\u00e9", ""]]),
                    tensor("u", (1,), "UINT8", [255]),
                ],
                "id": "req-7",
                "parameters": {"custom": {"any": "thing"}},
            }
        ),
        None,
        LIMITS,
    )
    i, b, s, u = (t.data for t in request.inputs)
    assert i.dtype == np.int64
    assert i.tolist() == [1, -2, 3]
    assert b.dtype == np.bool_
    assert b.tolist() == [True, False]
    assert s.shape == (1, 2)
    assert s.tolist() == [["h\u00e9".encode(), b""]]
    assert u.dtype == np.uint8
    assert request.id == "req-7"
    assert request.parameters == {"custom": {"any": "thing"}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [tensor(shape=(1, 3))]}, "input 'x': data has 2 elements, shape \\[1, 3\\] needs 3"),
        ({"inputs": [tensor(shape=(2, 2), data=[[1, 2], [3]])]}, "input 'x': data is not a regular"),
        (
            {"inputs": [tensor(shape=(4, 1), data=[[1, 2], [3, 4]])]},
            "nested data has shape \\[2, 2\\], the tensor says \\[4, 1\\]",
        ),
        ({"inputs": [tensor(datatype="FP16")]}, "input 'x': FP16 cannot be sent as JSON numbers"),
        ({"inputs": [tensor(datatype="BF16")]}, "BF16 is not supported"),
        ({"inputs": [tensor(datatype="float32")]}, "unknown datatype 'float32'"),
        ({"inputs": [tensor(data=["a", "b"])]}, "input 'x': FP32 data must be numbers"),
        ({"inputs": [tensor(datatype="INT64", data=[1.5, 2])]}, "input 'x': INT64 data must be integers"),
        ({"inputs": [tensor(datatype="BOOL", data=[1, 0])]}, "input 'x': BOOL data must be booleans"),
        ({"inputs": [tensor(datatype="UINT8", data=[256, 1])]}, "values must lie in \\[0, 255\\] for UINT8"),
        ({"inputs": [tensor(datatype="BYTES", data=[1, 2])]}, "BYTES data must be strings"),
        ({"inputs": [tensor(data=None)]}, "input 'x': no 'data' and no 'binary_data_size'"),
        ({"inputs": [tensor(shape=(1, -2))]}, "input 'x': shape \\[1, -2\\] has a negative dimension"),
        ({"inputs": [tensor(shape=(1, 1, 1, 1, 2))]}, "shape has 5 dimensions, the limit is 4"),
        ({"inputs": [tensor(shape=(100, 100), data=[0])]}, "holds 10000 elements, the limit is 1000"),
        ({"inputs": [tensor(name=f"x{i}") for i in range(5)]}, "request has 5 inputs, the limit is 4"),
        (
            {"inputs": [tensor()], "outputs": [{"name": f"o{i}"} for i in range(5)]},
            "asks for 5 outputs, the limit is 4",
        ),
        ({"inputs": "x"}, "invalid inference request: Expected `array`, got `str` - at `\\$.inputs`"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "missing required field `name`"),
        (
            {"inputs": [tensor(shape=[1.5, 2])]},
            "Expected `int`, got `float` - at `\\$.inputs\\[0\\].shape\\[0\\]`",
        ),
        ({"inputs": [tensor()], "parameters": {"timeout": "soon"}}, "request: parameter 'timeout' must be"),
        ({"inputs": [tensor()], "id": 5}, "Expected `str \\| null`, got `int` - at `\\$.id`"),
        ([1, 2], "Expected `object`, got `array`"),
    ],
)
def test_malformed_json_requests_name_the_field(doc: Any, message: str) -> None:
    bad(body(doc), message)


def test_not_json_at_all() -> None:
    bad(b'{"inputs": [', "request body is not valid JSON")
    bad(b"\xff\xfe", "request body is not valid JSON")


# -- binary tensors -----------------------------------------------------------------------------------------


def test_binary_inputs_are_views_of_the_body_in_input_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = b"\x02\x00\x00\x00hi\x00\x00\x00\x00"
    raw, n = binary_body(
        [
            tensor("a", (2, 3), "FP32", None, parameters={"binary_data_size": a.nbytes}),
            tensor("j", (1,), "INT64", [7]),
            tensor("s", (2,), "BYTES", None, parameters={"binary_data_size": len(s)}),
        ],
        [a.tobytes(), s],
    )
    request = decode_request(raw, n, LIMITS)
    np.testing.assert_array_equal(request.inputs[0].data, a)
    assert request.inputs[1].data.tolist() == [7]
    assert request.inputs[2].data.tolist() == [b"hi", b""]


@pytest.mark.parametrize(
    ("inputs", "blobs", "message"),
    [
        (
            [tensor("a", (1, 2), "FP32", None, parameters={"binary_data_size": 4})],
            [b"1234"],
            "input 'a': binary_data_size is 4 bytes, but shape \\[1, 2\\] of FP32 needs 8 bytes",
        ),
        (
            [tensor("a", (1, 2), "FP32", None, parameters={"binary_data_size": 8})],
            [b"1234"],
            "binary_data_size 8 runs past the end of the body \\(4 binary bytes left\\)",
        ),
        (
            [tensor("a", (1, 1), "FP32", None, parameters={"binary_data_size": 4})],
            [b"12345678"],
            "8 bytes of binary data after the JSON header, but the inputs' binary_data_size add up to 4",
        ),
        (
            [tensor("a", (1, 1), "FP32", [1], parameters={"binary_data_size": 4})],
            [b"1234"],
            "give either 'data' or parameter 'binary_data_size', not both",
        ),
        (
            [tensor("a", (1,), "FP32", None, parameters={"binary_data_size": -4})],
            [b"1234"],
            "parameter 'binary_data_size' must be a non-negative 64-bit integer",
        ),
        (
            [tensor("s", (2,), "BYTES", None, parameters={"binary_data_size": 6})],
            [b"\x02\x00\x00\x00hi"],
            "input 's': BYTES data of 6 bytes cannot hold 2 elements",
        ),
    ],
)
def test_malformed_binary_requests(inputs: list[dict[str, Any]], blobs: list[bytes], message: str) -> None:
    raw, n = binary_body(inputs, blobs)
    bad(raw, message, n)


def test_fp16_travels_as_binary() -> None:
    half = np.array([[0.5, -2.0]], dtype=np.float16)
    raw, n = binary_body(
        [tensor("h", (1, 2), "FP16", None, parameters={"binary_data_size": 4})], [half.tobytes()]
    )
    np.testing.assert_array_equal(decode_request(raw, n, LIMITS).inputs[0].data, half)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "must be a non-negative integer, got '-5'"),
        ("abc", "must be a non-negative integer, got 'abc'"),
        ("", "must be a non-negative integer"),
        ("1.5", "must be a non-negative integer"),
        ("500", "Inference-Header-Content-Length is 500 but the body has only 100 bytes"),
    ],
)
def test_bad_inference_header_content_length(value: str, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message) if "(" in message else message):
        header_length(value, 100)


def test_header_length_in_range() -> None:
    assert header_length(None, 10) is None
    assert header_length(" 10 ", 10) == 10


def test_header_length_that_cuts_the_json_is_a_clear_400() -> None:
    raw, n = binary_body([tensor()], [])
    bad(raw, "request body is not valid JSON", n - 3)


# -- responses ------------------------------------------------------------------------------------------------


def response() -> InferResponse:
    return InferResponse(
        "m",
        "3",
        [
            InferOutput("f", "FP32", (1, 2), np.array([[0.5, 1.5]], dtype=np.float32)),
            InferOutput("s", "BYTES", (2,), np.array([b"ab", "c"], dtype=object)),
        ],
        id="abc",
    )


def test_json_response_carries_id_version_and_flat_data() -> None:
    raw, n = encode_response(response(), InferRequest([]))
    assert n is None
    doc = json.loads(raw)
    assert doc == {
        "model_name": "m",
        "model_version": "3",
        "id": "abc",
        "outputs": [
            {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ab", "c"]},
        ],
    }


def test_binary_output_for_all_or_per_output() -> None:
    raw, n = encode_response(response(), InferRequest([], parameters={"binary_data_output": True}))
    assert n is not None
    header = json.loads(raw[:n])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 11]
    tail = raw[n:]
    assert np.frombuffer(tail[:8], np.float32).tolist() == [0.5, 1.5]
    assert tail[8:] == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"

    only_s = InferRequest(
        [],
        outputs=[RequestedOutput("f", {"binary_data": False}), RequestedOutput("s", {"binary_data": True})],
    )
    raw, n = encode_response(response(), only_s)
    assert n is not None
    header = json.loads(raw[:n])
    assert header["outputs"][0]["data"] == [0.5, 1.5]
    assert "data" not in header["outputs"][1]
    assert raw[n:] == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


# -- hostile bodies: checked before anything is allocated, never a 500 ---------------------------------

BIG = Limits()  # the server's defaults


def test_a_tiny_bytes_body_cannot_declare_a_huge_tensor() -> None:
    raw, length = binary_body(
        [tensor("s", (268_435_456,), "BYTES", None, parameters={"binary_data_size": 4})], [b"\0" * 4]
    )
    assert len(raw) < 200
    with pytest.raises(BadRequest, match="BYTES data of 4 bytes cannot hold 268435456 elements"):
        decode_request(raw, length, BIG)


@pytest.mark.parametrize("dims", [[0, 2**63 - 1], [0, 10**30], [2**28 + 1, 0]])
def test_a_zero_sized_shape_with_a_huge_dimension_is_refused(dims: list[int]) -> None:
    with pytest.raises(BadRequest, match="has a dimension over the limit of 268435456 elements"):
        decode_request(body({"inputs": [tensor("x", dims, "FP32", [])]}), None, BIG)


def test_a_huge_dimension_is_shown_short() -> None:
    with pytest.raises(BadRequest, match=r"shape \[0, 10000000\.\.\.\(1001 digits\)\]"):
        decode_request(
            f'{{"inputs":[{{"name":"x","shape":[0,{10**1000}],"datatype":"FP32","data":[]}}]}}'.encode(),
            None,
            BIG,
        )


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [65, 3000, 100_000])
def test_deep_json_is_a_400_wherever_it_is(depth: int) -> None:
    where = [
        f'{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"parameters":{{"p":{nested(depth)}}}}}',
        f'{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{{"p":{nested(depth)}}}}}]}}',
        f'{{"inputs":[{{"name":"x","shape":[1],"datatype":"BYTES","data":{nested(depth, chr(34) + "a" + chr(34))}}}]}}',
        f'{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"outputs":[{{"name":"y","parameters":{{"p":{nested(depth)}}}}}]}}',
    ]
    for doc in where:
        with pytest.raises(BadRequest, match="nest(s)? deeper than 64 levels"):
            decode_request(doc.encode(), None, BIG)


def test_json_nesting_up_to_the_limit_is_accepted() -> None:
    doc = {"inputs": [tensor("x", (1,), "BYTES", ["a"])], "parameters": {"p": json.loads(nested(63))}}
    assert decode_request(body(doc), None, BIG).parameters["p"] == json.loads(nested(63))
    with pytest.raises(BadRequest, match="deeper than 8 levels"):
        decode_request(body(doc), None, Limits(max_json_depth=8))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"timeout": 2**63}, "parameter 'timeout' must be a non-negative 64-bit integer"),
        ({"priority": 10**30}, "parameter 'priority' must be a non-negative 64-bit integer"),
    ],
)
def test_reserved_integers_must_fit_64_bits(parameters: dict[str, Any], message: str) -> None:
    bad(body({"inputs": [tensor()], "parameters": parameters}), message)


@pytest.mark.parametrize("size", [2**63 - 1, 2**64, 10**30])
def test_an_oversized_binary_data_size_is_a_400(size: int) -> None:
    raw, length = binary_body(
        [tensor("x", (1,), "FP32", None, parameters={"binary_data_size": size})], [b"\0" * 4]
    )
    with pytest.raises(BadRequest, match="binary_data_size"):
        decode_request(raw, length, BIG)


def test_a_zero_sized_shape_whose_other_dimensions_span_too_much_is_refused() -> None:
    """Each dimension under the cap, but numpy could not lay out [0, 2^28, 2^28, 2^28] (its strides
    overflow): the other dimensions must span at most max_elements too."""
    with pytest.raises(BadRequest, match="holds no element, but its other dimensions span"):
        decode_request(body({"inputs": [tensor("x", [0, 2**28, 2**28, 2**28], "FP32", [])]}), None, BIG)
    assert decode_request(body({"inputs": [tensor("x", [0, 2**14, 2**14], "FP32", [])]}), None, BIG).inputs[
        0
    ].data.shape == (0, 2**14, 2**14)


# -- large JSON bodies: read and written a chunk at a time -------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelfleet.protocol.rest as rest

    monkeypatch.setattr(rest, "JSON_CHUNK_BYTES", 16)
    monkeypatch.setattr(rest, "JSON_CHUNK_ELEMENTS", 4)


@pytest.mark.usefixtures("small_chunks")
def test_a_large_flat_json_array_is_read_in_chunks_with_the_same_checks() -> None:
    values = [i / 4 for i in range(50)]
    doc = {"inputs": [tensor("x", (5, 10), "FP32", values)]}
    decoded = decode_request(body(doc), None, BIG).inputs[0].data
    np.testing.assert_array_equal(decoded, np.array(values, np.float32).reshape(5, 10))
    assert decoded.dtype == np.float32
    ints = decode_request(body({"inputs": [tensor("i", (30,), "INT32", list(range(30)))]}), None, BIG)
    assert ints.inputs[0].data.tolist() == list(range(30))
    for data, message in [
        (values[:-1], r"data has 49 elements, shape \[5, 10\] needs 50"),
        ([*values[:-1], 1e39], r"values must lie in \[-3.40282e\+38, 3.40282e\+38\] for FP32"),
    ]:
        raw = body({"inputs": [tensor("x", (5, 10), "FP32", data)]})
        with pytest.raises(BadRequest, match=message):
            decode_request(raw, None, BIG)
    with pytest.raises(BadRequest, match="values must lie in"):
        decode_request(body({"inputs": [tensor("i", (30,), "INT8", list(range(100, 130)))]}), None, BIG)
    nested = decode_request(
        body({"inputs": [tensor("x", (5, 10), "FP32", [values[i : i + 10] for i in range(0, 50, 10)])]}),
        None,
        BIG,
    )
    np.testing.assert_array_equal(nested.inputs[0].data, decoded)  # nested: read whole, same answer


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.usefixtures("small_chunks")
def test_a_large_nested_json_array_is_read_in_chunks_of_rows_with_the_same_checks() -> None:
    values = np.arange(60, dtype=np.float32).reshape(3, 4, 5) / 4
    nested = values.tolist()
    decoded = decode_request(body({"inputs": [tensor("x", (3, 4, 5), "FP32", nested)]}), None, BIG)
    np.testing.assert_array_equal(decoded.inputs[0].data, values)
    spaced = body({"inputs": [tensor("x", (3, 4, 5), "FP32", nested)]}).replace(b"],[", b"] ,\n [")
    np.testing.assert_array_equal(decode_request(spaced, None, BIG).inputs[0].data, values)
    for shape in ((1, 3, 20), (2, 30), (1, 60)):  # rows larger than a chunk: read a level down
        doc = {"inputs": [tensor("x", shape, "FP32", values.reshape(shape).tolist())]}
        np.testing.assert_array_equal(
            decode_request(body(doc), None, BIG).inputs[0].data, values.reshape(shape)
        )
    long_rows = values.reshape(2, 30).tolist()
    with pytest.raises(BadRequest, match=r"nested data does not have the tensor's shape \[2, 30\]"):
        decode_request(
            body({"inputs": [tensor("x", (2, 30), "FP32", [long_rows[0], long_rows[1][:-1]])]}), None, BIG
        )
    ragged = [nested[0], nested[1], [row[:4] for row in nested[2]]]
    for data, shape, message in [
        (ragged, (3, 4, 5), r"nested data does not have the tensor's shape \[3, 4, 5\]"),
        (nested[:2], (3, 4, 5), r"data has 40 elements, shape \[3, 4, 5\] needs 60"),
        (nested, (3, 20), "nested data has shape"),  # nested deeper than its shape: read whole
        ([[1.0, 1e39]] + [[2.0, 3.0]] * 3, (4, 2), "values must lie in"),
    ]:
        with pytest.raises(BadRequest, match=message):
            decode_request(body({"inputs": [tensor("x", shape, "FP32", data)]}), None, BIG)


def test_a_large_output_is_written_in_chunks() -> None:
    y = np.arange(30, dtype=np.float32) / 8
    response = InferResponse("m", "1", [InferOutput("y", "FP32", (3, 10), y.reshape(3, 10))])
    payload, binary = encode_response(response, InferRequest([]))
    assert binary is None
    assert json.loads(payload)["outputs"][0]["data"] == y.tolist()
