"""The front's RemoteModel: a signature and counts here, the work sent through the fleet's dispatch;
the Infer message a request becomes and the response a worker's answer becomes (no processes)."""

import asyncio

import msgspec
import numpy as np
import pytest

from modelfleet.engine.ports import ServedModel
from modelfleet.errors import Overloaded
from modelfleet.protocol.v2 import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput
from modelfleet.repository.config import ModelConfig
from modelfleet.workers import messages as m
from modelfleet.workers.remote import RemoteModel, infer_message, response_of

CONFIG = ModelConfig.model_validate(
    {
        "backend": "onnxruntime",
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
)


class HeldDispatch:
    """The fleet's side: holds each request until released, answering with its inputs."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls: list[tuple[str, str]] = []

    async def dispatch(self, name: str, version: str, request: InferRequest) -> InferResponse:
        self.calls.append((name, version))
        self.entered.set()
        await self.release.wait()
        x = request.inputs[0]
        return InferResponse(name, version, [InferOutput("y", x.datatype, x.shape, x.data)], request.id)


def request() -> InferRequest:
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    return InferRequest([InferInput("x", "FP32", data.shape, data)], id="r1", outputs=[RequestedOutput("y")])


def test_the_signature_comes_from_the_workers_config() -> None:
    model: ServedModel = RemoteModel(HeldDispatch(), m.Version(3, CONFIG.model_dump_json(), 1234), "m")
    assert (model.name, model.version, model.version_str, model.nbytes) == ("m", 3, "3", 1234)
    assert model.platform == "onnxruntime_onnx" and model.max_batch_size == 8
    assert msgspec.to_builtins(model.metadata(["3"])) == {
        "name": "m",
        "versions": ["3"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    assert not hasattr(model, "runtime") and not hasattr(model, "executor")
    assert model.expected_wait_ns() == 0


async def test_infer_goes_through_the_dispatch_and_counts_in_flight() -> None:
    dispatch = HeldDispatch()
    model = RemoteModel(dispatch, m.Version(1, CONFIG.model_dump_json(), 0), "m")
    task = asyncio.ensure_future(model.infer(request(), 0))
    await dispatch.entered.wait()
    assert model.in_flight == 1 and dispatch.calls == [("m", "1")]
    dispatch.release.set()
    response = await task
    assert model.in_flight == 0
    assert response.outputs[0].data.tolist() == request().inputs[0].data.tolist()


def test_a_request_becomes_an_infer_message_and_an_answer_a_response() -> None:
    message, buffers = infer_message(7, "m", "1", request())
    assert (message.id, message.model, message.version, message.outputs) == (7, "m", "1", ["y"])
    assert [(t.name, t.datatype, tuple(t.shape)) for t in message.inputs] == [("x", "FP32", (2, 4))]
    raw = memoryview(b"".join(bytes(b) for b in buffers))
    reply = m.Result(7, "m", "1", [m.Tensor("y", "FP32", (2, 4), 32)], {"k": 1})
    response = response_of(reply, raw, request())
    assert (response.model_name, response.model_version, response.id, response.parameters) == (
        "m",
        "1",
        "r1",
        {"k": 1},
    )
    assert response.outputs[0].data.tolist() == request().inputs[0].data.tolist()


def test_a_workers_failure_is_raised_with_its_status() -> None:
    with pytest.raises(Overloaded, match="queue full"):
        response_of(m.Failed(7, 429, "queue full"), memoryview(b""), request())
