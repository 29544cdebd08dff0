"""Conformance with the official client: tritonclient.http, unchanged, against `modelfleet serve`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url)
    yield client
    client.close()  # closed here: left to __del__, gevent may raise in whichever test collects it


def identity_input(x: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identity")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    assert meta["name"] == "modelfleet"
    model = client.get_model_metadata("identity")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert client.get_model_metadata("versioned", "1")["versions"] == ["1", "2"]
    assert client.get_model_config("identity")["max_batch_size"] == 8


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client: httpclient.InferenceServerClient, binary: bool) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    outputs = [httpclient.InferRequestedOutput("output", binary_data=binary)]
    result = client.infer("identity", [identity_input(x, binary)], outputs=outputs, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("output"), x)
    response = result.get_response()
    assert response["id"] == "r-1"
    assert response["model_version"] == "1"


def test_infer_without_requested_outputs_gets_binary(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 16), np.float32)
    result = client.infer("identity", [identity_input(x, False)])
    assert result.get_output("output")["parameters"]["binary_data_size"] == 64
    np.testing.assert_array_equal(result.as_numpy("output"), x)


def test_two_inputs_selected_outputs_and_versions(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.int64).reshape(2, 4)
    b = np.full((2, 4), 3, dtype=np.int64)
    inputs = []
    for name, value in (("a", a), ("b", b)):
        t = httpclient.InferInput(name, [2, 4], "INT64")
        t.set_data_from_numpy(value)
        inputs.append(t)
    result = client.infer("add_sub", inputs, outputs=[httpclient.InferRequestedOutput("sum")])
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    assert result.as_numpy("diff") is None
    x = np.ones((1, 2), np.float32)
    t = httpclient.InferInput("input", [1, 2], "FP32")
    t.set_data_from_numpy(x)
    assert client.infer("versioned", [t], model_version="1").get_response()["model_version"] == "1"
    assert client.infer("versioned", [t]).get_response()["model_version"] == "2"


def test_bytes_tensors(client: httpclient.InferenceServerClient) -> None:
    text = np.array([["caf\u00e9".encode(), b"\x00\x01"]], dtype=np.object_)
    t = httpclient.InferInput("input", [1, 2], "BYTES")
    t.set_data_from_numpy(text, binary_data=True)
    result = client.infer(
        "strings", [t], outputs=[httpclient.InferRequestedOutput("output", binary_data=True)]
    )
    assert result.as_numpy("output").tolist() == [["caf\u00e9".encode(), b"\x00\x01"]]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: httpclient.InferenceServerClient, algorithm: str) -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    result = client.infer(
        "identity",
        [identity_input(x, True)],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("output"), x)


def test_errors_come_back_as_exceptions_with_the_message(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 16), np.float32)
    with pytest.raises(InferenceServerException, match="model 'nope' not found"):
        client.infer("nope", [identity_input(x, True)])
    wrong = httpclient.InferInput("input", [1, 8], "FP32")
    wrong.set_data_from_numpy(np.ones((1, 8), np.float32))
    with pytest.raises(
        InferenceServerException, match="shape \\[1, 8\\] does not match the model's \\[-1, 16\\]"
    ):
        client.infer("identity", [wrong])
    with pytest.raises(
        InferenceServerException,
        match="model 'broken' failed to load: ONNX Runtime cannot load broken/1/model.onnx",
    ):
        client.get_model_metadata("broken")
    assert client.is_server_ready()


def test_repository_extension(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    states = {(e["name"], e.get("version")): e["state"] for e in index}
    assert states[("identity", "1")] == "READY"
    assert states[("broken", "1")] == "UNAVAILABLE"
    client.unload_model("auto")
    assert not client.is_model_ready("auto")
    client.load_model("auto")
    assert client.is_model_ready("auto")
    with pytest.raises(InferenceServerException, match="config overrides are not accepted"):
        client.load_model("auto", config="{}")
    with pytest.raises(InferenceServerException, match="model files cannot be uploaded"):
        client.load_model("auto", config="{}", files={"file:1/model.onnx": b"\x00"})


def test_statistics_extension(client: httpclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("identity")["model_stats"][0]["inference_stats"]["success"][
        "count"
    ]
    client.infer("identity", [identity_input(np.ones((2, 16), np.float32), True)])
    stats = client.get_inference_statistics("identity", "1")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == before + 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    assert any(b["batch_size"] == 2 for b in stats["batch_stats"])
    assert len(client.get_inference_statistics()["model_stats"]) >= 3
