"""Property-based tests of both request codecs (issue 16, item 8): every input decodes or raises
BadRequest, never another exception, and decoding allocates in proportion to the body it was given
(not to the shapes the body declares).

`decode_request` (REST: JSON bodies and JSON header + binary tail) and `decode_infer_request`
(gRPC: ModelInferRequest) get random documents and messages: shapes with huge, zero and negative
dimensions, random datatypes, binary tails of random lengths, random `binary_data_size`s and
Inference-Header-Content-Length values, random parameters (reserved names included), and JSON
nested thousands of levels deep. The hypothesis profile (tests/conftest.py) is derandomized, so a
run is the same on every machine; `HYPOTHESIS_PROFILE=explore` searches longer with a random seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelfleet.errors import BadRequest
from modelfleet.protocol.datatypes import DATATYPES, serialize_bytes
from modelfleet.protocol.grpc import codec
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.rest import Limits, decode_request, header_length

# Small enough that an allocation driven by a declared (not sent) element count shows at once
# against the memory bound below; large enough that real tensors decode.
LIMITS = Limits(max_inputs=8, max_rank=6, max_elements=1 << 18, max_json_depth=16)
# Peak traced memory while decoding may be at most this, plus PER_BODY_BYTE per byte of body: a
# JSON number or string costs a Python object, a list slot and an array element (~40 bytes for 3-4
# bytes of JSON; measured peaks stay under 33 bytes per body byte + 7 KiB); an array of 2^18
# elements made for what a 100-byte body declares, not what it holds, costs 256 KiB to 2 MiB.
FIXED_BYTES = 64 << 10
PER_BODY_BYTE = 64

NAMES = [*DATATYPES, "BF16", "fp32", "", "FOO", "INT128"]
Tensor = pb.ModelInferRequest.InferInputTensor
Output = pb.ModelInferRequest.InferRequestedOutputTensor


def decodes_or_400(decode: Callable[[], object], body_bytes: int) -> None:
    """The property: `decode()` returns or raises BadRequest; any other exception propagates (and
    hypothesis shrinks it); its peak traced allocation stays within the bound for `body_bytes`."""
    tracemalloc.start()
    try:
        with contextlib.suppress(BadRequest):
            decode()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = FIXED_BYTES + PER_BODY_BYTE * body_bytes
    assert peak <= bound, f"decoding a {body_bytes}-byte body allocated {peak} bytes (bound {bound})"


def decode_rest(body: bytes, json_length: int | None) -> None:
    decodes_or_400(lambda: decode_request(body, json_length, LIMITS), len(body))


def decode_grpc(message: pb.ModelInferRequest) -> None:
    wire = message.SerializeToString()
    received = pb.ModelInferRequest.FromString(wire)  # as the server hands it to the codec
    decodes_or_400(lambda: codec.decode_infer_request(received, LIMITS), len(wire))


# -- strategies: JSON --------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
dims = st.one_of(
    st.integers(0, 4),
    st.integers(-3, 40),
    st.sampled_from(
        [0, -1, 1 << 16, 1 << 18, (1 << 18) + 1, 1 << 28, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]
    ),
)
shapes = st.lists(dims, max_size=8)
# Few dimensions, each tiny or huge: element counts past what a short body can hold, under the cap
declared_shapes = st.lists(
    st.sampled_from([1, 2, 0, 1 << 13, 1 << 16, 1 << 18, (1 << 18) + 1, 2**63 - 1, 10**30, -1]), max_size=3
)
small_shapes = st.lists(st.integers(0, 4), max_size=3)
sizes = st.one_of(
    st.integers(0, 64), st.sampled_from([-1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]), json_scalars
)


def _element(name: str) -> st.SearchStrategy[Any]:
    """A JSON value of the datatype's kind (sometimes out of its range)."""
    if name == "BOOL":
        return st.booleans()
    if name == "BYTES":
        return st.text(max_size=6)
    if name in DATATYPES and DATATYPES[name].dtype.kind in "iu":
        info = np.iinfo(DATATYPES[name].dtype)
        return st.integers(int(info.min) - 2, int(info.max) + 2)
    return st.floats(allow_nan=False, allow_infinity=False, width=32)


def _count(shape: Any) -> int | None:
    """The element count of a plausible shape, None for a shape that cannot be filled cheaply."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d <= 64 for d in shape):
        return None
    count = math.prod(shape)
    return count if count <= 64 else None


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in eight (False when shrinking: the minimal failing input is the
    plainest one), so that most bodies get past the schema to the tensor checks."""
    return draw(st.integers(0, 7)) == 7


@st.composite
def json_data(draw: st.DrawFn, name: str, shape: Any) -> Any:
    """`data` for a tensor: right-sized flat or nested values of its kind, sometimes anything."""
    count = _count(shape)
    if count is None or rarely(draw):
        return draw(json_values)
    size = count + 1 if rarely(draw) else count
    element = st.one_of(_element(name), json_scalars) if rarely(draw) else _element(name)
    flat = draw(st.lists(element, min_size=size, max_size=size))
    if size == count and len(shape) > 1 and draw(st.booleans()):
        return np.array([*flat, None], dtype=object)[:count].reshape(shape).tolist()  # nested like the shape
    return flat


@st.composite
def binary_payload(draw: st.DrawFn, name: str, shape: Any) -> bytes:
    """Bytes for a binary input: the right size for the shape, sometimes any."""
    count = _count(shape)
    if count is None or rarely(draw):
        return draw(st.binary(max_size=40))
    if name == "BYTES":
        items = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
        return serialize_bytes(np.array([*items, None], dtype=object)[:count])
    itemsize = DATATYPES[name].itemsize if name in DATATYPES else 4
    return draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))


def parameters(reserved: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.one_of(st.sampled_from(reserved), st.text(max_size=6)), json_values, min_size=1, max_size=3
    )


TENSOR_RESERVED = ["binary_data", "binary_data_size", "classification"]
REQUEST_RESERVED = [
    "binary_data_output",
    "timeout",
    "priority",
    "sequence_id",
    "sequence_start",
    "sequence_end",
]


@st.composite
def rest_tensor(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """One entry of `inputs` and its binary tail (b"" when it has none)."""
    name = draw(st.sampled_from(NAMES))
    kind = draw(st.integers(0, 7))
    shape = draw(small_shapes if kind < 5 else shapes if kind < 7 else json_values)
    doc: dict[str, Any] = {
        "name": draw(st.one_of(st.text(max_size=6), json_scalars)) if rarely(draw) else "input",
        "datatype": draw(json_scalars) if rarely(draw) else name,
        "shape": shape,
    }
    params = draw(parameters(TENSOR_RESERVED)) if rarely(draw) else {}
    tail = b""
    mode = draw(st.sampled_from(["data", "binary", "data", "binary", "both", "neither"]))
    if mode in ("data", "both"):
        doc["data"] = draw(json_data(name, shape))
    if mode in ("binary", "both"):
        tail = draw(binary_payload(name, shape))
        params["binary_data_size"] = draw(sizes) if rarely(draw) else len(tail)
    if params:
        doc["parameters"] = params
    if rarely(draw):
        del doc[draw(st.sampled_from(["name", "datatype", "shape"]))]
    return doc, tail


@st.composite
def rest_body(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A request body and its Inference-Header-Content-Length (None when absent)."""
    entries = draw(st.lists(rest_tensor(), max_size=4))
    doc: dict[str, Any] = {"inputs": [entry for entry, _ in entries]}
    if rarely(draw):
        doc["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.one_of(st.text(max_size=6), json_scalars)},
                    optional={"parameters": st.one_of(parameters(TENSOR_RESERVED), json_values)},
                ),
                max_size=3,
            )
        )
    if rarely(draw):
        doc["id"] = draw(st.one_of(st.text(max_size=8), json_scalars))
    if rarely(draw):
        doc["parameters"] = draw(st.one_of(parameters(REQUEST_RESERVED), json_values))
    header = json.dumps(doc).encode()
    tail = b"".join(t for _, t in entries)
    if rarely(draw):
        tail += draw(st.sampled_from([b"\x00", b"junk"]))
    body = header + tail
    if rarely(draw):
        return body, draw(st.integers(0, len(body)))  # any Inference-Header-Content-Length
    return body, len(header) if tail or draw(st.booleans()) else None


@given(st.text(st.characters(max_codepoint=0x2FF), max_size=8), st.integers(0, 100))
@example("\xb3", 10)
@settings(max_examples=100)
def test_inference_header_content_length_parses_or_400(value: str, body_length: int) -> None:
    """Header values as the server decodes them (latin-1): a length or BadRequest."""
    with contextlib.suppress(BadRequest):
        length = header_length(value, body_length)
        assert length is not None and 0 <= length <= body_length


def nested(depth: int, opener: str, leaf: str = "1") -> str:
    """JSON text nested `depth` levels (built as text: json.dumps recurses)."""
    closer = {"[": "]", '{"k":': "}"}[opener]
    return opener * depth + leaf + closer * depth


# -- REST ------------------------------------------------------------------------------------------------------


@given(rest_body())
@settings(max_examples=200)
def test_rest_structured_bodies_decode_or_400(case: tuple[bytes, int | None]) -> None:
    body, json_length = case
    decode_rest(body, json_length)


@given(
    st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.fixed_dictionaries({"inputs": json_values}).map(lambda v: json.dumps(v).encode()),
    ),
    st.one_of(st.none(), st.integers(0, 80)),
)
@settings(max_examples=150)
def test_rest_arbitrary_documents_and_bytes_decode_or_400(body: bytes, json_length: int | None) -> None:
    decode_rest(body, min(json_length, len(body)) if json_length is not None else None)


WHERE = {
    "data": '{{"inputs": [{{"name": "x", "shape": [1], "datatype": "{dt}", "data": {v}}}]}}',
    "tensor parameters": '{{"inputs": [{{"name": "x", "shape": [1], "datatype": "{dt}", "data": [1], "parameters": {{"p": {v}}}}}]}}',
    "request parameters": '{{"inputs": [], "parameters": {{"p": {v}}}}}',
    "output parameters": '{{"inputs": [], "outputs": [{{"name": "y", "parameters": {{"p": {v}}}}}]}}',
    "shape": '{{"inputs": [{{"name": "x", "shape": {v}, "datatype": "{dt}", "data": [1]}}]}}',
    "id": '{{"inputs": [], "id": {v}}}',
    "top": "{v}",
}


@given(
    st.sampled_from(sorted(WHERE)),
    st.sampled_from(["BYTES", "FP32", "INT64", "BOOL"]),
    st.one_of(st.integers(1, 80), st.integers(1, 5000)),
    st.sampled_from(["[", '{"k":']),
    st.sampled_from(["1", '"a"', "[]", "{}"]),
)
@settings(max_examples=120)
def test_rest_deep_nesting_decodes_or_400(where: str, dt: str, depth: int, opener: str, leaf: str) -> None:
    body = WHERE[where].format(dt=dt, v=nested(depth, opener, leaf)).encode()
    decode_rest(body, None)


@given(
    st.sampled_from(["BYTES", "FP32", "UINT8", "BOOL", "FP16"]),
    st.one_of(declared_shapes, shapes),
    st.binary(max_size=16),
    st.one_of(st.none(), sizes),
)
@settings(max_examples=150)
def test_rest_binary_tail_against_declared_shape(dt: str, shape: list[int], tail: bytes, size: Any) -> None:
    """The shape of issue 16's 117-byte request: a declared shape, a tiny tail, its size (or any
    size) in binary_data_size."""
    size = len(tail) if size is None else size
    doc = {
        "inputs": [{"name": "x", "shape": shape, "datatype": dt, "parameters": {"binary_data_size": size}}]
    }
    header = json.dumps(doc).encode()
    decode_rest(header + tail, len(header))


def test_rest_tiny_bytes_request_for_2_28_elements_is_400_within_the_bound() -> None:
    """Issue 16's example as a fixed case, under the default (large) limits."""
    doc = {
        "inputs": [
            {"name": "x", "shape": [1 << 28], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}
        ]
    }
    header = json.dumps(doc).encode()
    body = header + b"\x00\x00\x00\x00"
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest, match="cannot hold"):
            decode_request(body, len(header), Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < FIXED_BYTES


def test_fp32_json_values_past_the_range_are_refused() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e39]}]}'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadRequest):
            decode_request(body, None, LIMITS)


# -- gRPC -------------------------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
grpc_dims = st.one_of(
    st.integers(0, 4),
    st.integers(-3, 40),
    st.sampled_from([0, -1, 1 << 16, 1 << 18, (1 << 18) + 1, 1 << 27, 2**31, 2**32, 2**63 - 1, -(2**63)]),
    INT64,
)
infer_parameter = st.one_of(
    st.just(pb.InferParameter()),
    st.builds(pb.InferParameter, bool_param=st.booleans()),
    st.builds(pb.InferParameter, int64_param=INT64),
    st.builds(pb.InferParameter, string_param=st.text(max_size=8)),
    st.builds(pb.InferParameter, double_param=st.floats()),
    st.builds(pb.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
)


def grpc_parameters(reserved: list[str]) -> st.SearchStrategy[dict[str, pb.InferParameter]]:
    return st.dictionaries(
        st.one_of(st.sampled_from(reserved), st.text(max_size=6)), infer_parameter, min_size=1, max_size=3
    )


CONTENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": INT64,
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}
FIELD_OF = {name: field for name, (field, _) in codec._CONTENTS.items()}


@st.composite
def contents(draw: st.DrawFn, name: str, shape: list[int]) -> pb.InferTensorContents:
    """Typed contents: the datatype's field with the right count, sometimes any fields."""
    count = _count(shape)
    if name in FIELD_OF and count is not None and not rarely(draw):
        field = FIELD_OF[name]
        size = count + 1 if rarely(draw) else count
        values = draw(st.lists(CONTENT_FIELDS[field], min_size=size, max_size=size))
        return pb.InferTensorContents(**{field: values})
    fields = draw(st.sets(st.sampled_from(sorted(CONTENT_FIELDS)), max_size=2))
    return pb.InferTensorContents(**{f: draw(st.lists(CONTENT_FIELDS[f], max_size=8)) for f in fields})


@st.composite
def grpc_request(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Inputs in raw_input_contents or in typed contents (sometimes both, or the wrong number of
    raw entries), shapes mostly small, parameters and outputs sometimes."""
    typed = draw(st.booleans())
    tensors = []
    raw = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(NAMES))
        kind = draw(st.integers(0, 7))
        shape = draw(small_shapes if kind < 5 else st.lists(grpc_dims, max_size=8))
        tensor = Tensor(
            name=draw(st.text(max_size=6)) if rarely(draw) else "input",
            datatype=name,
            shape=shape,
            parameters=draw(grpc_parameters(TENSOR_RESERVED)) if rarely(draw) else {},
        )
        if typed or rarely(draw):
            tensor.contents.CopyFrom(draw(contents(name, shape)))
        tensors.append(tensor)
        raw.append(draw(binary_payload(name, shape)))
    if typed:
        raw = []
    if rarely(draw):
        raw = draw(st.lists(st.binary(max_size=16), max_size=5))  # any number of entries
    outputs = []
    if rarely(draw):
        outputs = draw(
            st.lists(
                st.builds(Output, name=st.text(max_size=6), parameters=grpc_parameters(TENSOR_RESERVED)),
                max_size=3,
            )
        )
    return pb.ModelInferRequest(
        model_name="m",
        id=draw(st.text(max_size=8)) if rarely(draw) else "",
        parameters=draw(grpc_parameters(REQUEST_RESERVED)) if rarely(draw) else {},
        inputs=tensors,
        outputs=outputs,
        raw_input_contents=raw,
    )


@given(grpc_request())
@settings(max_examples=200)
def test_grpc_random_messages_decode_or_400(message: pb.ModelInferRequest) -> None:
    decode_grpc(message)


@given(
    st.sampled_from(["BYTES", "FP32", "UINT8", "BOOL", "FP16", "INT64"]),
    st.one_of(declared_shapes.filter(lambda s: all(d < 2**63 for d in s)), st.lists(grpc_dims, max_size=6)),
    st.one_of(st.none(), st.binary(max_size=16)),
)
@settings(max_examples=150)
def test_grpc_raw_contents_against_declared_shape(dt: str, shape: list[int], raw: bytes | None) -> None:
    """A declared shape and a tiny (or no) raw payload: refused before the shape is allocated."""
    message = pb.ModelInferRequest(
        inputs=[Tensor(name="x", datatype=dt, shape=shape)], raw_input_contents=[] if raw is None else [raw]
    )
    decode_grpc(message)


@given(st.binary(max_size=200))
@settings(max_examples=100)
def test_grpc_arbitrary_bytes_that_parse_decode_or_400(wire: bytes) -> None:
    try:
        message = pb.ModelInferRequest.FromString(wire)
    except Exception:  # not a message: the transport answers INVALID_ARGUMENT before the codec
        return
    decodes_or_400(lambda: codec.decode_infer_request(message, LIMITS), len(wire))


def test_grpc_tiny_bytes_request_for_2_27_elements_is_400_within_the_bound() -> None:
    """Issue 16's gRPC example as a fixed case, under the default (large) limits."""
    message = pb.ModelInferRequest(
        inputs=[Tensor(name="x", datatype="BYTES", shape=[1 << 27])], raw_input_contents=[b"\x00" * 4]
    )
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest, match="cannot hold"):
            codec.decode_infer_request(message, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < FIXED_BYTES
