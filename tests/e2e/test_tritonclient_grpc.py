"""Conformance with the official client: tritonclient.grpc, unchanged, against `modelfleet serve`."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identity")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "modelfleet"
    model = client.get_model_metadata("identity", as_json=True)
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert client.get_model_metadata("versioned", "1").versions == ["1", "2"]
    assert client.get_model_config("identity").config.max_batch_size == 8


def test_infer_raw_contents_with_requested_outputs(client: grpcclient.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.int64).reshape(2, 4)
    b = np.full((2, 4), 3, dtype=np.int64)
    inputs = []
    for name, value in (("a", a), ("b", b)):
        tensor = grpcclient.InferInput(name, [2, 4], "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput("diff")]
    result = client.infer("add_sub", inputs, outputs=outputs, request_id="r-1", priority=1, timeout=10**7)
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
    assert result.as_numpy("sum") is None
    response = result.get_response()
    assert (response.id, response.model_version) == ("r-1", "1")

    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    tensor = grpcclient.InferInput("input", [3, 16], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("identity", [tensor]).as_numpy("output"), x)
    words = np.array([[b"modelfleet", "é".encode()]], dtype=object)
    tensor = grpcclient.InferInput("input", [1, 2], "BYTES")
    tensor.set_data_from_numpy(words)
    assert client.infer("strings", [tensor]).as_numpy("output").tolist() == words.tolist()


def test_errors_reach_the_client(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("input", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
    with pytest.raises(InferenceServerException, match="model 'nope' not found") as caught:
        client.infer("nope", [tensor])
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    wrong = grpcclient.InferInput("input", [1, 16], "INT32")
    wrong.set_data_from_numpy(np.ones((1, 16), np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("identity", [wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_ready()


def test_repository_and_statistics(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "identity", "version": "1", "state": "READY"}.items() <= next(
        m for m in index if m["name"] == "identity"
    ).items()
    client.unload_model("auto")
    assert not client.is_model_ready("auto")
    client.load_model("auto")
    assert client.is_model_ready("auto")
    tensor = grpcclient.InferInput("input", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
    client.infer("identity", [tensor])
    stats = client.get_inference_statistics("identity", as_json=True)["model_stats"]
    assert stats[0]["name"] == "identity"
    assert int(stats[0]["inference_count"]) >= 1
    with pytest.raises(InferenceServerException, match="failed to load model 'broken'"):
        client.load_model("broken")
