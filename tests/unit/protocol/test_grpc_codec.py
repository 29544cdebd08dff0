"""The gRPC codec: ModelInferRequest -> InferRequest (raw and typed), answers back, control documents."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from google.protobuf import json_format

from modelfleet.engine.stats import ModelStats
from modelfleet.errors import BadRequest
from modelfleet.protocol.documents import (
    ConfigTensor,
    IndexEntry,
    LatestVersions,
    ModelConfiguration,
    ModelMetadata,
    ModelResidency,
    ServerMetadata,
    Statistics,
    TensorMetadata,
    VersionPolicy,
)
from modelfleet.protocol.grpc import METHODS, SERVICE, codec, method_path
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.rest import Limits
from modelfleet.protocol.v2 import InferOutput, InferResponse

Tensor = pb.ModelInferRequest.InferInputTensor
LIMITS = Limits(max_inputs=4, max_rank=3, max_elements=1000)


def request(*tensors: Tensor, raw: list[bytes] | None = None, **fields: Any) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", inputs=tensors, raw_input_contents=raw or [], **fields)
    return pb.ModelInferRequest.FromString(message.SerializeToString())  # as the server receives it


def test_raw_inputs_become_shaped_views() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"
    decoded = codec.decode_infer_request(
        request(
            Tensor(name="x", datatype="FP32", shape=[2, 3]),
            Tensor(name="w", datatype="BYTES", shape=[2]),
            raw=[x.tobytes(), words],
            id="r-1",
            parameters={"priority": pb.InferParameter(uint64_param=2)},
        ),
        LIMITS,
    )
    assert (decoded.id, decoded.priority, decoded.outputs) == ("r-1", 2, None)
    np.testing.assert_array_equal(decoded.inputs[0].data, x)
    assert decoded.inputs[1].data.tolist() == [b"a", b"bc"]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("INT8", "int_contents", [-128, 127], np.int8),
        ("UINT16", "uint_contents", [0, 65535], np.uint16),
        ("INT64", "int64_contents", [-(2**40), 2**40], np.int64),
        ("UINT64", "uint64_contents", [0, 2**63], np.uint64),
        ("FP32", "fp32_contents", [0.5, -1.5], np.float32),
        ("FP64", "fp64_contents", [1e300, -1e-300], np.float64),
    ],
)
def test_typed_contents(datatype: str, field: str, values: list[Any], dtype: type[np.generic]) -> None:
    tensor = Tensor(
        name="x", datatype=datatype, shape=[1, 2], contents=pb.InferTensorContents(**{field: values})
    )
    array = codec.decode_infer_request(request(tensor), LIMITS).inputs[0].data
    assert array.dtype == dtype and array.shape == (1, 2)
    np.testing.assert_array_equal(array, np.array(values, dtype).reshape(1, 2))


def test_bytes_contents_and_requested_outputs() -> None:
    tensor = Tensor(
        name="s", datatype="BYTES", shape=[2], contents=pb.InferTensorContents(bytes_contents=[b"x", b""])
    )
    out = pb.ModelInferRequest.InferRequestedOutputTensor(
        name="y", parameters={"classification": pb.InferParameter(int64_param=2)}
    )
    decoded = codec.decode_infer_request(request(tensor, outputs=[out]), LIMITS)
    assert decoded.inputs[0].data.tolist() == [b"x", b""]
    assert [(o.name, o.parameters) for o in decoded.outputs or []] == [("y", {"classification": 2})]


def test_empty_tensor_needs_no_data() -> None:
    decoded = codec.decode_infer_request(request(Tensor(name="x", datatype="FP32", shape=[0, 3])), LIMITS)
    assert decoded.inputs[0].data.shape == (0, 3)


F32 = Tensor(name="x", datatype="FP32", shape=[2])
BAD = [
    (request(F32, raw=[bytes(7)]), "input 'x' (raw_input_contents[0]): 7 bytes, but shape [2] of FP32 needs 8 bytes"),
    (request(F32, F32, raw=[bytes(8)]), "raw_input_contents has 1 entries for 2 inputs"),
    (request(F32), "input 'x': no 'contents' and no raw_input_contents"),
    (request(Tensor(name="", datatype="FP32", shape=[1]), raw=[bytes(4)]), "input 0 has no name"),
    (request(Tensor(name="x", datatype="FP8", shape=[1]), raw=[b"x"]), "unknown datatype 'FP8'"),
    (request(Tensor(name="x", datatype="FP32", shape=[1, 1, 1, 1]), raw=[bytes(4)]), "4 dimensions, the limit is 3"),
    (request(Tensor(name="x", datatype="FP32", shape=[-2]), raw=[b""]), "negative dimension"),
    (request(Tensor(name="x", datatype="FP32", shape=[100, 100]), raw=[b""]), "10000 elements, the limit is 1000"),
    (request(*[F32] * 5, raw=[bytes(8)] * 5), "request has 5 inputs, the limit is 4"),
    (
        request(Tensor(name="x", datatype="BYTES", shape=[2]), raw=[b"\x01\x00\x00\x00a"]),
        "BYTES data of 5 bytes cannot hold 2 elements",
    ),
    (
        request(Tensor(name="x", datatype="FP32", shape=[2], contents=pb.InferTensorContents(fp32_contents=[1, 2])), raw=[bytes(8)]),
        "give either 'contents' or raw_input_contents, not both",
    ),
    (
        request(Tensor(name="x", datatype="INT8", shape=[1], contents=pb.InferTensorContents(int_contents=[300]))),
        "values must lie in [-128, 127] for INT8",
    ),
    (
        request(Tensor(name="x", datatype="FP16", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1]))),
        "FP16 data must be sent in raw_input_contents",
    ),
    (
        request(Tensor(name="x", datatype="FP32", shape=[2], contents=pb.InferTensorContents(fp32_contents=[1]))),
        "contents.fp32_contents, which has 1 elements; shape [2] needs 2",
    ),
    (
        request(F32, raw=[bytes(8)], parameters={"timeout": pb.InferParameter(bool_param=True)}),
        "request: parameter 'timeout' must be a non-negative 64-bit integer",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("message", "error"), BAD)
def test_bad_requests_name_the_problem(message: pb.ModelInferRequest, error: str) -> None:
    with pytest.raises(BadRequest) as caught:
        codec.decode_infer_request(message, LIMITS)
    assert error in caught.value.message


def test_answers_are_raw() -> None:
    response = InferResponse(
        "m",
        "3",
        [
            InferOutput("y", "INT16", (2,), np.array([1, -1], np.int16)),
            InferOutput("s", "BYTES", (1,), np.array([b"hi"], dtype=object)),
        ],
        id="r-9",
        parameters={"sequence_end": True, "note": "x"},
    )
    message = pb.ModelInferResponse.FromString(codec.encode_infer_response(response).SerializeToString())
    assert (message.model_name, message.model_version, message.id) == ("m", "3", "r-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("y", "INT16", [2]),
        ("s", "BYTES", [1]),
    ]
    assert list(message.raw_output_contents) == [np.array([1, -1], np.int16).tobytes(), b"\x02\x00\x00\x00hi"]
    assert codec.parameters(message.parameters) == {"sequence_end": True, "note": "x"}


def test_control_documents() -> None:
    tensor = TensorMetadata(name="x", datatype="FP32", shape=[-1, 4])
    meta = codec.model_metadata(
        ModelMetadata(name="m", versions=["1"], platform="onnxruntime_onnx", inputs=[tensor], outputs=[])
    )
    assert (meta.name, list(meta.versions), list(meta.inputs[0].shape)) == ("m", ["1"], [-1, 4])
    config = codec.model_config(
        ModelConfiguration(
            name="m", max_batch_size=8, backend="onnxruntime", platform="onnxruntime_onnx",
            input=[ConfigTensor(name="x", data_type="TYPE_FP32", dims=[4])], output=[],
            version_policy=VersionPolicy(latest=LatestVersions(num_versions=1)),
        )
    ).config  # fmt: skip
    assert (config.max_batch_size, config.input[0].data_type, config.version_policy.latest.num_versions) == (
        8,
        11,
        1,
    )
    server = codec.server_metadata(
        ServerMetadata(name="modelfleet", version="1.0", extensions=["statistics"])
    )
    assert (server.name, server.version, list(server.extensions)) == ("modelfleet", "1.0", ["statistics"])
    index = codec.repository_index([IndexEntry(name="m", state="UNAVAILABLE", reason="")])
    assert [(m.name, m.version, m.state, m.reason) for m in index.models] == [("m", "", "UNAVAILABLE", "")]


def test_statistics_are_the_message_the_json_document_parses_into() -> None:
    """Built field by field from the typed document, the answer is byte for byte the message that
    protobuf's own JSON mapping makes of the same document (residency and memory dropped)."""
    counts = ModelStats()
    counts.record_success(4, 4, total_ns=10, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    counts.record_success(1, 2, total_ns=20, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    counts.record_failure(7)
    residency = ModelResidency(
        resident_bytes=10, pinned=False, last_load_s=0.5, last_used=1.5, loads=1, load_failures=0,
        cold_starts=0, evictions=0, state="READY", reason="", load_s_total=0.5, accounted_bytes=10,
    )  # fmt: skip
    entry = msgspec.structs.replace(counts.statistics("m", "1"), residency=residency)
    doc = Statistics(model_stats=[entry, ModelStats().statistics("n", "2")])
    message = codec.statistics(doc)
    parsed = json_format.ParseDict(
        {"model_stats": msgspec.to_builtins(doc.model_stats)},
        pb.ModelStatisticsResponse(),
        ignore_unknown_fields=True,
    )
    assert message.SerializeToString() == parsed.SerializeToString()
    first = message.model_stats[0]
    assert (first.inference_count, first.execution_count, first.inference_stats.fail.count) == (5, 2, 1)
    assert [b.batch_size for b in first.batch_stats] == [2, 4]


def test_method_table() -> None:
    assert SERVICE == "inference.GRPCInferenceService"
    assert method_path("ModelInfer") == "/inference.GRPCInferenceService/ModelInfer"
    assert METHODS["ModelInfer"] == (pb.ModelInferRequest, pb.ModelInferResponse)


# -- hostile messages: checked before anything is allocated ---------------------------------------------


def test_a_tiny_bytes_message_cannot_declare_a_huge_tensor() -> None:
    message = request(Tensor(name="s", datatype="BYTES", shape=[2**27]), raw=[b"\0" * 4])
    assert message.ByteSize() < 64
    with pytest.raises(BadRequest, match="BYTES data of 4 bytes cannot hold 134217728 elements"):
        codec.decode_infer_request(message, Limits())


@pytest.mark.parametrize("dims", [[0, 2**63 - 1], [0, 2**40]])
def test_a_zero_sized_shape_with_a_huge_dimension_is_refused(dims: list[int]) -> None:
    for message in (
        request(Tensor(name="x", datatype="FP32", shape=dims)),
        request(Tensor(name="x", datatype="FP32", shape=dims), raw=[b""]),
    ):
        with pytest.raises(BadRequest, match="has a dimension over the limit of 268435456 elements"):
            codec.decode_infer_request(message, Limits())


def test_reserved_integers_must_fit_64_bits_over_grpc() -> None:
    message = request(
        Tensor(name="x", datatype="FP32", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1.0])),
        parameters={"timeout": pb.InferParameter(uint64_param=2**64 - 1)},
    )
    with pytest.raises(BadRequest, match="parameter 'timeout' must be a non-negative 64-bit integer"):
        codec.decode_infer_request(message, Limits())
