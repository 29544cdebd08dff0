"""SageMaker body shapes: media types, target-model names, TF-serving-like bodies onto V2 requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelfleet.errors import BadRequest
from modelfleet.protocol.rest import Limits
from modelfleet.protocol.sagemaker import (
    TRITON_BINARY_TYPE,
    Answer,
    NotAcceptable,
    UnsupportedMediaType,
    acceptable,
    binary_content_type,
    decode_invocation,
    encode_predictions,
    json_header_length,
    parse_media_type,
    require_json,
    target_model,
)
from modelfleet.protocol.v2 import InferOutput, InferResponse, TensorSpec

LIMITS = Limits()
ONE = {"x": TensorSpec("x", "FP32", (-1, 3))}
TWO = {"a": TensorSpec("a", "INT64", (-1, 2)), "b": TensorSpec("b", "INT64", (-1, 2))}
TEXT = {"text": TensorSpec("text", "BYTES", (-1, 1))}


def decode(doc: object, inputs: dict[str, TensorSpec] = ONE, batched: bool = True) -> tuple[dict, Answer]:  # type: ignore[type-arg]
    request, answer = decode_invocation(json.dumps(doc).encode(), None, inputs, batched, LIMITS)
    return {t.name: (t.datatype, t.shape, t.data) for t in request.inputs}, answer


# -- media types -------------------------------------------------------------------------------------------


def test_media_types_are_parsed_with_their_parameters() -> None:
    assert parse_media_type("Application/JSON; charset=utf-8") == ("application/json", {"charset": "utf-8"})
    assert parse_media_type(f'{TRITON_BINARY_TYPE}; json-header-size="12"')[1] == {"json-header-size": "12"}


def test_json_and_binary_bodies_say_their_header_length() -> None:
    assert json_header_length(None, None, 10) is None
    assert json_header_length("application/json; charset=utf-8", None, 10) is None
    assert json_header_length("application/json", "4", 10) == 4  # tritonclient's binary body
    assert json_header_length("application/octet-stream", "4", 10) == 4
    assert json_header_length(binary_content_type(6), None, 10) == 6


@pytest.mark.parametrize(
    ("content_type", "header", "message"),
    [
        ("application/octet-stream", None, "needs the Inference-Header-Content-Length"),
        (TRITON_BINARY_TYPE, None, "json-header-size=N"),
        (binary_content_type(11), None, "but the body has only 10 bytes"),
        (f"{TRITON_BINARY_TYPE};json-header-size=-1", None, "non-negative integer"),
    ],
)
def test_bad_binary_bodies_are_refused(content_type: str, header: str | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        json_header_length(content_type, header, 10)


def test_other_media_types_are_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="'text/csv' is not supported") as info:
        json_header_length("text/csv", None, 10)
    assert info.value.status == 415
    with pytest.raises(UnsupportedMediaType):
        require_json("application/x-www-form-urlencoded")
    require_json(None)
    require_json("application/json; charset=utf-8")


def test_accept_negotiation() -> None:
    assert acceptable(None) == (True, True)
    assert acceptable("*/*") == (True, True)
    assert acceptable("application/json") == (True, False)
    assert acceptable("application/octet-stream, text/plain") == (False, True)
    assert acceptable("text/html, application/json;q=0.5") == (True, False)
    with pytest.raises(NotAcceptable, match="allows none of application/json") as info:
        acceptable("text/csv")
    assert info.value.status == 406
    with pytest.raises(NotAcceptable):
        acceptable("application/json;q=0")


# -- target model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("tenant-00042.tar.gz", "tenant-00042"),
        ("tenant-00042", "tenant-00042"),
        (" identity.TGZ ", "identity"),
        ("model.v2.zip", "model.v2"),
        ("a.tar", "a"),
    ],
)
def test_target_model_maps_artefacts_to_names(value: str, name: str) -> None:
    assert target_model(value) == name


@pytest.mark.parametrize(
    "value",
    ["../x", "../x.tar.gz", "a/b.tar.gz", "/etc/passwd", "..", ".tar.gz", "", "a\\b", "x\x00", "%2e%2e"],
)
def test_target_model_refuses_paths_and_tricks(value: str) -> None:
    with pytest.raises(BadRequest, match="X-Amzn-SageMaker-Target-Model: invalid model name"):
        target_model(value)


# -- request bodies ----------------------------------------------------------------------------------------


def test_instances_of_a_single_input_model_are_rows() -> None:
    tensors, answer = decode({"instances": [[1, 2, 3], [4, 5, 6]]})
    assert answer is Answer.PREDICTIONS
    datatype, shape, data = tensors["x"]
    assert (datatype, shape) == ("FP32", (2, 3))
    assert data.dtype == np.float32
    assert data.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_instances_of_a_single_input_model_may_be_keyed() -> None:
    tensors, _ = decode({"instances": [{"x": [1, 2, 3]}]})
    assert tensors["x"][1] == (1, 3)


def test_instances_of_a_multi_input_model_are_objects_keyed_by_input() -> None:
    tensors, _ = decode({"instances": [{"a": [1, 2], "b": [3, 4]}, {"a": [5, 6], "b": [7, 8]}]}, TWO)
    assert tensors["a"][2].tolist() == [[1, 2], [5, 6]]
    assert tensors["b"][2].tolist() == [[3, 4], [7, 8]]
    assert tensors["a"][0] == "INT64"


def test_columns_carry_the_whole_tensor() -> None:
    tensors, answer = decode({"inputs": [[1, 2, 3]]})
    assert answer is Answer.PREDICTIONS and tensors["x"][1] == (1, 3)
    tensors, _ = decode({"inputs": {"a": [[1, 2]], "b": [[3, 4]]}}, TWO)
    assert tensors["b"][2].tolist() == [[3, 4]]


def test_strings_become_bytes_tensors() -> None:
    tensors, _ = decode({"instances": [["good"], ["bad"]]}, TEXT)
    assert tensors["text"][1] == (2, 1)
    assert tensors["text"][2].tolist() == [[b"good"], [b"bad"]]


def test_a_model_without_batch_dimension_takes_one_instance() -> None:
    tensors, _ = decode({"instances": [[[1, 2, 3], [4, 5, 6]]]}, batched=False)
    assert tensors["x"][1] == (2, 3)
    with pytest.raises(BadRequest, match="must hold one row, not 2"):
        decode({"instances": [[1, 2, 3], [4, 5, 6]]}, batched=False)


def test_v2_bodies_pass_through() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}], "id": "7"}
    request, answer = decode_invocation(json.dumps(doc).encode(), None, ONE, True, LIMITS)
    assert answer is Answer.V2 and request.id == "7"
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}
            ]
        }
    ).encode()
    raw = np.arange(3, dtype=np.float32).tobytes()
    request, answer = decode_invocation(header + raw, len(header), ONE, True, LIMITS)
    assert answer is Answer.V2
    assert request.inputs[0].data.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("doc", "inputs", "message"),
    [
        ([1, 2], ONE, "must be a JSON object"),
        ({"rows": []}, ONE, "needs 'instances'"),
        ({"instances": [], "inputs": []}, ONE, "not both"),
        ({"instances": []}, ONE, "non-empty list of rows"),
        ({"instances": {"x": 1}}, ONE, "non-empty list of rows"),
        ({"instances": [[1, 2]]}, TWO, "instance 0 must be an object keyed by input name"),
        ({"instances": [{"a": [1, 2]}]}, TWO, "instance 0 has no input 'b'"),
        ({"instances": [{"a": [1, 2], "b": [1, 2], "c": 1}]}, TWO, "unknown input 'c'"),
        ({"inputs": [[1, 2]]}, TWO, "'inputs' must be an object keyed by input name"),
        ({"inputs": {"y": [[1, 2, 3]]}}, ONE, "has no input 'x'"),
        ({"instances": [[1, 2, 3], [4, 5]]}, ONE, "ragged"),
        ({"instances": [["a"], ["b", "c"], []]}, TEXT, "ragged"),
        ({"instances": [[1, [2], 3]]}, ONE, "ragged"),
        ({"instances": [["a", "b", "c"]]}, ONE, "FP32 data must be numbers"),
        ({"instances": [[1, 2, 3]]}, TEXT, "BYTES data must be strings"),
        ({"inputs": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}, ONE, "nested deeper than the limit of 16"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(
    doc: object, inputs: dict[str, TensorSpec], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        decode(doc, inputs)


def test_invalid_json_is_refused() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        decode_invocation(b"{not json", None, ONE, True, LIMITS)


def test_element_limits_are_the_v2_codecs() -> None:
    with pytest.raises(BadRequest, match="the limit is 4"):
        decode_invocation(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', None, ONE, True, Limits(max_elements=4))


# -- answers -----------------------------------------------------------------------------------------------


def response(*outputs: InferOutput) -> InferResponse:
    return InferResponse("m", "1", list(outputs))


def test_predictions_of_a_single_output_are_its_rows() -> None:
    out = InferOutput("y", "FP32", (2, 2), np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert json.loads(encode_predictions(response(out), batched=True)) == {"predictions": [[1, 2], [3, 4]]}
    assert json.loads(encode_predictions(response(out), batched=False)) == {"predictions": [[[1, 2], [3, 4]]]}


def test_predictions_of_several_outputs_are_objects_per_row() -> None:
    labels = np.array([[b"pos"], [b"neg"]], dtype=object)
    outs = (
        InferOutput("label", "BYTES", (2, 1), labels),
        InferOutput("p", "FP32", (2,), np.array([0.75, 0.25], dtype=np.float32)),
    )
    assert json.loads(encode_predictions(response(*outs), batched=True)) == {
        "predictions": [{"label": ["pos"], "p": 0.75}, {"label": ["neg"], "p": 0.25}]
    }
    assert json.loads(encode_predictions(response(*outs), batched=False)) == {
        "predictions": [{"label": [["pos"], ["neg"]], "p": [0.75, 0.25]}]
    }
