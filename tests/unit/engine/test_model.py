from pathlib import Path

import numpy as np
import pytest

from modelfleet.engine.executor import ModelExecutor
from modelfleet.engine.model import LoadedModel
from modelfleet.errors import BadRequest
from modelfleet.protocol.v2 import InferInput, InferRequest, RequestedOutput
from modelfleet.repository.config import ModelConfig, complete_config
from modelfleet.runtimes.base import LoadSpec, load_runtime
from tests.models import add_sub


@pytest.fixture
async def model(tmp_path: Path):  # type: ignore[no-untyped-def]
    runtime = load_runtime(
        LoadSpec("add_sub", 1, add_sub(tmp_path / "m.onnx"), ModelConfig(backend="onnxruntime"), 1)
    )
    config = complete_config(
        ModelConfig(backend="onnxruntime", max_batch_size=4), runtime.inputs, runtime.outputs, 8
    )
    loaded = LoadedModel("add_sub", 1, config, runtime, ModelExecutor(runtime, "add_sub/1", 8))
    yield loaded
    await loaded.executor.close()


def tensor(name: str, shape: tuple[int, ...] = (1, 4), datatype: str = "INT64") -> InferInput:
    return InferInput(name, datatype, shape, np.ones(shape, np.int64))


def test_metadata(model: LoadedModel) -> None:
    meta = model.metadata(["1"])
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [-1, 4]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 4]},
    ]


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ([tensor("a")], None, "missing input 'b' \\(INT64 \\[-1, 4\\]\\) for model 'add_sub'"),
        (
            [tensor("a"), tensor("b"), tensor("c")],
            None,
            "unknown input 'c' for model 'add_sub'; expected \\['a', 'b'\\]",
        ),
        ([tensor("a"), tensor("a")], None, "input 'a' given twice"),
        (
            [tensor("a"), tensor("b", datatype="FP32")],
            None,
            "input 'b': datatype FP32 does not match the model's INT64",
        ),
        (
            [tensor("a"), tensor("b", (1, 5))],
            None,
            "input 'b': shape \\[1, 5\\] does not match the model's \\[-1, 4\\]",
        ),
        ([tensor("a"), tensor("b", (4,))], None, "input 'b': shape \\[4\\] does not match"),
        (
            [tensor("a", (5, 4)), tensor("b", (5, 4))],
            None,
            "batch size 5 is over the model's max_batch_size 4",
        ),
        (
            [tensor("a", (2, 4)), tensor("b", (3, 4))],
            None,
            "input 'b': batch size 3 differs from the other inputs' 2",
        ),
        (
            [tensor("a"), tensor("b")],
            [RequestedOutput("prod")],
            "unknown output 'prod' requested from model 'add_sub'",
        ),
        (
            [tensor("a"), tensor("b")],
            [RequestedOutput("sum"), RequestedOutput("sum")],
            "output 'sum' requested twice",
        ),
    ],
)
def test_requests_not_matching_the_signature(
    model: LoadedModel, inputs: list[InferInput], outputs: list[RequestedOutput] | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        model.prepare(InferRequest(inputs, outputs))


async def test_infer_returns_requested_outputs_in_order_and_counts(model: LoadedModel) -> None:
    a = InferInput("a", "INT64", (2, 4), np.arange(8, dtype=np.int64).reshape(2, 4))
    b = InferInput("b", "INT64", (2, 4), np.ones((2, 4), np.int64))
    response = await model.infer(InferRequest([a, b], [RequestedOutput("diff")], id="r1"), 0)
    assert response.id == "r1"
    assert response.model_version == "1"
    assert [o.name for o in response.outputs] == ["diff"]
    np.testing.assert_array_equal(response.outputs[0].data, a.data - 1)
    with pytest.raises(BadRequest):
        await model.infer(InferRequest([a]), 0)
    doc = model.stats.as_dict("add_sub", "1")
    assert doc["inference_count"] == 2
    assert doc["inference_stats"]["success"]["count"] == 1
    assert doc["inference_stats"]["fail"]["count"] == 1
    assert doc["batch_stats"][0]["batch_size"] == 2
