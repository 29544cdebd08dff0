import asyncio
from pathlib import Path

import numpy as np
import pytest

from modelfleet.engine.executor import ModelExecutor
from modelfleet.engine.model import LoadedModel
from modelfleet.errors import BadRequest
from modelfleet.protocol.documents import TensorMetadata
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
    assert (meta.name, meta.versions, meta.platform) == ("add_sub", ["1"], "onnxruntime_onnx")
    assert meta.inputs == [
        TensorMetadata(name="a", datatype="INT64", shape=[-1, 4]),
        TensorMetadata(name="b", datatype="INT64", shape=[-1, 4]),
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


# -- shape buckets and the response cache ---------------------------------------------------------------

from modelfleet.engine.cache import ResponseCache  # noqa: E402
from modelfleet.engine.executor import Batching  # noqa: E402
from modelfleet.repository.config import ShapeBuckets  # noqa: E402
from tests.models import identity  # noqa: E402


def seq_model(
    tmp_path: Path, cache: ResponseCache | None = None, buckets: ShapeBuckets | None = None
) -> LoadedModel:
    path = identity(tmp_path / "seq.onnx", "FP32", ("batch", "seq"))
    declared = ModelConfig(backend="onnxruntime", max_batch_size=8, shape_buckets=buckets)
    runtime = load_runtime(LoadSpec("seq", 1, path, declared, 1))
    config = complete_config(declared, runtime.inputs, runtime.outputs, 8)
    executor = ModelExecutor(runtime, "seq/1", 8, Batching(max_rows=8))
    return LoadedModel("seq", 1, config, runtime, executor, cache=cache)


def seq_request(values: list[float]) -> InferRequest:
    data = np.array([values], np.float32)
    return InferRequest([InferInput("input", "FP32", data.shape, data)])


async def test_shape_buckets_batch_different_lengths_and_cut_outputs_back(tmp_path: Path) -> None:
    buckets = ShapeBuckets(axis=1, sizes=[4, 8], pad={"input": -1.0}, outputs={"output": 1})
    model = seq_model(tmp_path, buckets=buckets)
    short, longer = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    a, b = await asyncio.gather(model.infer(seq_request(short), 0), model.infer(seq_request(longer), 0))
    assert a.outputs[0].data.tolist() == [short]
    assert b.outputs[0].data.tolist() == [longer]
    with pytest.raises(BadRequest, match="model 'seq' takes at most 8 on axis 1 of \\['input'\\], got 9"):
        await model.infer(seq_request([0.0] * 9), 0)
    await model.executor.close()


async def test_shape_buckets_let_padded_requests_share_a_batch(tmp_path: Path) -> None:
    buckets = ShapeBuckets(axis=1, sizes=[8], pad={"input": 0.0}, outputs={"output": 1})
    model = seq_model(tmp_path, buckets=buckets)
    responses = await asyncio.gather(*(model.infer(seq_request([1.0] * n), 0) for n in (2, 5, 7)))
    assert [r.outputs[0].shape for r in responses] == [(1, 2), (1, 5), (1, 7)]
    assert model.stats.as_dict("seq", "1")["batch_stats"][0]["batch_size"] == 3  # one execution of 3 rows
    await model.executor.close()


async def test_the_response_cache_answers_repeats_and_keeps_models_apart(tmp_path: Path) -> None:
    cache = ResponseCache(1 << 20)
    model = seq_model(tmp_path, cache=cache)
    first = await model.infer(seq_request([1.0, 2.0]), 0)
    second = await model.infer(seq_request([1.0, 2.0]), 0)
    other = await model.infer(seq_request([1.0, 3.0]), 0)
    assert second.outputs[0].data.tolist() == first.outputs[0].data.tolist() == [[1.0, 2.0]]
    assert other.outputs[0].data.tolist() == [[1.0, 3.0]]
    stats = model.stats.as_dict("seq", "1")["inference_stats"]
    assert stats["cache_hit"]["count"] == 1
    assert stats["cache_miss"]["count"] == 2
    x = {"input": np.array([[1.0, 2.0]], np.float32)}
    assert cache.key("seq", 1, x, ["output"]) != cache.key("seq", 2, x, ["output"])
    assert cache.key("seq", 1, x, ["output"]) != cache.key("other", 1, x, ["output"])
    cache.drop_model("seq")
    assert len(cache) == 0
    await model.executor.close()


def test_the_cache_is_bounded_in_bytes() -> None:
    cache = ResponseCache(3000)
    for i in range(10):
        cache.put(("m", 1, bytes([i])), [np.zeros(128, np.float32)])  # 512 + 256 bytes each
    assert cache.used_bytes <= 3000
    assert len(cache) == 3
    assert cache.get(("m", 1, bytes([9]))) is not None
    assert cache.get(("m", 1, bytes([0]))) is None
