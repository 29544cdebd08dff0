"""The gRPC front in-process: the real app's lifespan starts grpc.aio on a free port beside the ASGI
app; every RPC, every bad input (with the server still answering afterwards), same texts as HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.protocol.grpc import METHODS, method_path
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.server.app import build_app
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.grpc import GrpcFront
from tests.e2e.conftest import free_port
from tests.hold import HeldRuns
from tests.models import identity
from tests.waiting import until

Tensor = pb.ModelInferRequest.InferInputTensor
Output = pb.ModelInferRequest.InferRequestedOutputTensor
ROW = np.arange(16, dtype=np.float32) / 16


class Stub:
    """A client for every method of the table the server registers."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._calls = {
            method: channel.unary_unary(
                method_path(method),
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )
            for method, (req, resp) in METHODS.items()
        }
        self.channel = channel

    async def __call__(self, method: str, **fields: Any) -> Any:
        return await self._calls[method](METHODS[method][0](**fields))


@dataclass
class Served:
    stub: Stub
    http: httpx.AsyncClient
    plane: DataPlane
    port: int


@asynccontextmanager
async def serving(settings: ServerSettings) -> AsyncIterator[Served]:
    """The app with its lifespan run (so the gRPC server starts as under uvicorn), until ready."""
    app, plane = build_app(settings)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelfleet") as http,
        ):
            stub = Stub(channel)
            await until(plane.ready, "the server is ready (its start-up loads done)", timeout_s=15)
            assert (await stub("ServerReady")).ready
            yield Served(stub, http, plane, settings.grpc_port)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


def grpc_settings(repo: Path, **overrides: Any) -> ServerSettings:
    fields: dict[str, Any] = {
        "repository": repo,
        "intra_op_threads": 1,
        "startup_load": StartupLoad.NONE,
        "grpc_port": free_port(),
        "max_body_bytes": 1 << 20,
    }
    return ServerSettings(**(fields | overrides))


@pytest.fixture
async def served(repo: Path) -> AsyncIterator[Served]:
    async with serving(grpc_settings(repo)) as s:
        yield s


def identity_request(x: np.ndarray | None = None, **fields: Any) -> dict[str, Any]:
    x = ROW.reshape(1, 16) if x is None else x
    return {
        "model_name": "identity",
        "inputs": [Tensor(name="input", datatype="FP32", shape=list(x.shape))],
        "raw_input_contents": [x.tobytes()],
        **fields,
    }


async def assert_healthy(stub: Stub) -> None:
    """The server still answers a good request correctly."""
    answer = await stub("ModelInfer", **identity_request())
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32), ROW)
    assert (await stub("ServerReady")).ready


async def expect_error(stub: Stub, method: str, code: grpc.StatusCode, message: str, **fields: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(method, **fields)
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    assert message in details, details
    await assert_healthy(stub)
    return details


# -- health, metadata, config -----------------------------------------------------------------------------


async def test_health_and_metadata(served: Served) -> None:
    stub = served.stub
    assert (await stub("ServerLive")).live
    assert (await stub("ServerReady")).ready
    meta = await stub("ServerMetadata")
    assert meta.name == "modelfleet"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta.extensions)
    model = await stub("ModelMetadata", name="identity")
    assert (model.name, list(model.versions), model.platform) == ("identity", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 16])]
    assert (await stub("ModelMetadata", name="versioned", version="1")).versions == ["1", "2"]
    config = (await stub("ModelConfig", name="identity")).config
    assert (config.name, config.max_batch_size, config.backend) == ("identity", 8, "onnxruntime")
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", 11, [16])]  # TYPE_FP32
    assert (await stub("ModelReady", name="identity")).ready
    assert not (await stub("ModelReady", name="nope")).ready
    assert not (await stub("ModelReady", name="broken")).ready


async def test_unknown_method_is_unimplemented(served: Served) -> None:
    call = served.stub.channel.unary_unary("/inference.GRPCInferenceService/ModelStreamInfer")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await assert_healthy(served.stub)


# -- inference ---------------------------------------------------------------------------------------------


async def test_infer_raw_with_id_and_parameters(served: Served) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    params = {"priority": pb.InferParameter(uint64_param=1), "timeout": pb.InferParameter(int64_param=10**7)}
    answer = await served.stub("ModelInfer", **identity_request(x, id="r-1", parameters=params))
    assert (answer.model_name, answer.model_version, answer.id) == ("identity", "1", "r-1")
    [out] = answer.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output", "FP32", [3, 16])
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(3, 16), x)


async def test_infer_typed_contents_and_requested_outputs(served: Served) -> None:
    a, b = np.arange(8).reshape(2, 4), np.full((2, 4), 3)
    answer = await served.stub(
        "ModelInfer",
        model_name="add_sub",
        inputs=[
            Tensor(
                name=n,
                datatype="INT64",
                shape=[2, 4],
                contents=pb.InferTensorContents(int64_contents=v.ravel()),
            )
            for n, v in (("a", a), ("b", b))
        ],
        outputs=[Output(name="diff")],
    )
    assert [o.name for o in answer.outputs] == ["diff"]
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.int64).reshape(2, 4), a - b)
    typed = await served.stub(
        "ModelInfer",
        model_name="identity",
        inputs=[
            Tensor(
                name="input",
                datatype="FP32",
                shape=[1, 16],
                contents=pb.InferTensorContents(fp32_contents=ROW),
            )
        ],
    )
    np.testing.assert_array_equal(np.frombuffer(typed.raw_output_contents[0], np.float32), ROW)


async def test_infer_bytes_and_fp16(served: Served) -> None:
    strings = await served.stub(
        "ModelInfer",
        model_name="strings",
        inputs=[
            Tensor(
                name="input",
                datatype="BYTES",
                shape=[1, 2],
                contents=pb.InferTensorContents(bytes_contents=[b"ab", b""]),
            )
        ],
    )
    assert strings.raw_output_contents[0] == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    half = np.array([[1.5, -2, 0, 65504]], np.float16)
    answer = await served.stub(
        "ModelInfer",
        model_name="half",
        inputs=[Tensor(name="input", datatype="FP16", shape=[1, 4])],
        raw_input_contents=[half.tobytes()],
    )
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float16), half.ravel())


# -- every bad input: the right code, a message naming the problem, the server still healthy ------------

_RAW = ROW.reshape(1, 16).tobytes()
BAD_INFER = [
    pytest.param(
        {**identity_request(), "model_name": "nope"}, grpc.StatusCode.NOT_FOUND, "model 'nope' not found", id="unknown-model"
    ),
    pytest.param(
        {**identity_request(), "model_version": "9"}, grpc.StatusCode.NOT_FOUND, "(version '9') not found", id="unknown-version"
    ),
    pytest.param(
        {**identity_request(), "model_name": "../etc"}, grpc.StatusCode.INVALID_ARGUMENT, "model name", id="bad-name"
    ),
    pytest.param(
        {**identity_request(), "inputs": [Tensor(name="input", datatype="INT32", shape=[1, 16])]},
        grpc.StatusCode.INVALID_ARGUMENT, "INT32", id="wrong-datatype",
    ),
    pytest.param(
        {**identity_request(), "inputs": [Tensor(name="input", datatype="FP33", shape=[1, 16])]},
        grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype 'FP33'", id="unknown-datatype",
    ),
    pytest.param(
        {**identity_request(), "inputs": [Tensor(name="input", datatype="FP32", shape=[1, 15])]},
        grpc.StatusCode.INVALID_ARGUMENT, "needs 60 bytes", id="raw-size-mismatch",
    ),
    pytest.param(
        identity_request(np.ones((1, 15), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "shape", id="wrong-shape"
    ),
    pytest.param(
        {**identity_request(), "inputs": [Tensor(name="input", datatype="FP32", shape=[-1, 16])]},
        grpc.StatusCode.INVALID_ARGUMENT, "negative dimension", id="negative-dim",
    ),
    pytest.param(
        {**identity_request(), "raw_input_contents": [_RAW, _RAW]},
        grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 inputs", id="raw-count",
    ),
    pytest.param(
        {"model_name": "identity", "inputs": [Tensor(name="input", datatype="FP32", shape=[1, 16])]},
        grpc.StatusCode.INVALID_ARGUMENT, "no 'contents' and no raw_input_contents", id="no-data",
    ),
    pytest.param(
        {"model_name": "add_sub", "inputs": [Tensor(name="a", datatype="INT64", shape=[1, 4])], "raw_input_contents": [bytes(32)]},
        grpc.StatusCode.INVALID_ARGUMENT, "'b'", id="missing-input",
    ),
    pytest.param(
        {**identity_request(), "outputs": [Output(name="nope")]},
        grpc.StatusCode.INVALID_ARGUMENT, "nope", id="unknown-output",
    ),
    pytest.param(
        {**identity_request(), "parameters": {"timeout": pb.InferParameter(string_param="soon")}},
        grpc.StatusCode.INVALID_ARGUMENT, "parameter 'timeout' must be", id="bad-timeout",
    ),
    pytest.param(
        {"model_name": "half", "inputs": [Tensor(name="input", datatype="FP16", shape=[1, 4], contents=pb.InferTensorContents(fp32_contents=[1, 2, 3, 4]))]},
        grpc.StatusCode.INVALID_ARGUMENT, "FP16 data must be sent in raw_input_contents", id="fp16-typed",
    ),
    pytest.param(
        {"model_name": "identity", "inputs": [Tensor(name="input", datatype="FP32", shape=[1, 16], contents=pb.InferTensorContents(int_contents=[1] * 16))]},
        grpc.StatusCode.INVALID_ARGUMENT, "contents.fp32_contents, which has 0 elements", id="wrong-contents-field",
    ),
    pytest.param(
        {**identity_request(), "inputs": [Tensor(name="input", datatype="FP32", shape=[1 << 20, 1 << 20])]},
        grpc.StatusCode.INVALID_ARGUMENT, "the limit is", id="too-many-elements",
    ),
    pytest.param(
        {**identity_request(), "model_name": "broken"}, grpc.StatusCode.UNAVAILABLE, "broken", id="broken-model"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "code", "message"), BAD_INFER)
async def test_bad_infer_requests(
    served: Served, fields: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    await expect_error(served.stub, "ModelInfer", code, message, **fields)


async def test_same_error_text_as_http(served: Served) -> None:
    details = await expect_error(
        served.stub,
        "ModelInfer",
        grpc.StatusCode.NOT_FOUND,
        "not found",
        **{**identity_request(), "model_name": "nope"},
    )
    r = await served.http.post("/v2/models/nope/infer", json={"inputs": []})
    assert (r.status_code, r.json()) == (404, {"error": details})


async def test_malformed_message_and_message_over_the_limit(served: Served) -> None:
    call = served.stub.channel.unary_unary(method_path("ModelInfer"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"\xff\xff\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in (caught.value.details() or "")
    big = np.zeros((1, 300_000), np.float32)  # 1.2 MB > max_body_bytes (1 MiB)
    await expect_error(
        served.stub,
        "ModelInfer",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "request message larger than the limit of 1048576 bytes",
        **identity_request(big),
    )


async def test_too_many_inputs(repo: Path) -> None:
    async with serving(grpc_settings(repo, max_inputs=2)) as served:
        fields = {
            "model_name": "identity",
            "inputs": [Tensor(name=f"in{i}", datatype="FP32", shape=[1]) for i in range(3)],
            "raw_input_contents": [bytes(4)] * 3,
        }
        await expect_error(
            served.stub, "ModelInfer", grpc.StatusCode.INVALID_ARGUMENT, "3 inputs, the limit is 2", **fields
        )


# -- repository and statistics --------------------------------------------------------------------------


async def test_repository_load_unload_and_index(served: Served) -> None:
    stub = served.stub
    await stub("RepositoryModelLoad", model_name="add_sub")
    index = {(m.name, m.version): m for m in (await stub("RepositoryIndex")).models}
    assert index[("add_sub", "1")].state == "READY"
    ready = {m.name for m in (await stub("RepositoryIndex", ready=True)).models}
    assert "add_sub" in ready and "broken" not in ready
    await stub("RepositoryModelUnload", model_name="add_sub")
    assert not (await stub("ModelReady", name="add_sub")).ready
    await expect_error(
        stub,
        "RepositoryModelLoad",
        grpc.StatusCode.INVALID_ARGUMENT,
        "failed to load model 'broken'",
        model_name="broken",
    )
    broken = [m for m in (await stub("RepositoryIndex")).models if m.name == "broken"]
    assert [(m.state, bool(m.reason)) for m in broken] == [("UNAVAILABLE", True)]
    await expect_error(
        stub, "RepositoryModelLoad", grpc.StatusCode.NOT_FOUND, "model 'nope' not found", model_name="nope"
    )
    upload = {"file:1/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"x")}
    await expect_error(
        stub,
        "RepositoryModelLoad",
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot be uploaded",
        model_name="identity",
        parameters=upload,
    )


async def test_statistics(served: Served) -> None:
    await assert_healthy(served.stub)
    stats = await served.stub("ModelStatistics", name="identity")
    [entry] = stats.model_stats
    assert (entry.name, entry.version) == ("identity", "1")
    assert entry.inference_count >= 1 and entry.inference_stats.success.count >= 1
    assert "identity" in {s.name for s in (await served.stub("ModelStatistics")).model_stats}
    await expect_error(
        served.stub, "ModelStatistics", grpc.StatusCode.NOT_FOUND, "not found", name="nope", version="1"
    )


async def test_answers_are_counted_in_metrics(served: Served) -> None:
    await assert_healthy(served.stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await served.stub("ModelInfer", **identity_request(np.ones((1, 15), np.float32)))
    text = (await served.http.get("/metrics")).text
    series = {
        (s.name, s.labels.get("model"), s.labels.get("status_class")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert series[("modelfleet_requests_total", "identity", "2xx")] == 1
    assert series[("modelfleet_requests_total", "identity", "4xx")] == 1


# -- the port ------------------------------------------------------------------------------------------------


async def test_a_taken_port_is_refused_by_name(served: Served, repo: Path) -> None:
    front = GrpcFront(served.plane, grpc_settings(repo, grpc_port=served.port))
    with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{served.port}"):
        await front.start()
    await assert_healthy(served.stub)


# -- the HTTP/2 layer under a real grpc-core client ------------------------------------------------------------


async def test_large_tensors_both_ways_cross_flow_control(tmp_path: Path) -> None:
    """800 KB in and out: more than HTTP/2's default 64 KiB windows and 16 KiB frames each way."""
    identity(tmp_path / "wide" / "1" / "model.onnx", "FP32", ("batch", 1000))
    x = np.random.default_rng(1).random((200, 1000), dtype=np.float32)
    async with serving(grpc_settings(tmp_path)) as served:
        answer = await served.stub("ModelInfer", **identity_request(x, model_name="wide"))
        out = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(x.shape)
        np.testing.assert_array_equal(out, x)
        await asyncio.gather(
            *(served.stub("ModelInfer", **identity_request(x, model_name="wide")) for _ in range(4))
        )


async def test_many_concurrent_calls_on_one_connection_get_their_own_answers(served: Served) -> None:
    rows = [np.full((1, 16), i, np.float32) for i in range(64)]
    answers = await asyncio.gather(*(served.stub("ModelInfer", **identity_request(r)) for r in rows))
    for row, answer in zip(rows, answers, strict=True):
        np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32), row.ravel())


async def test_calls_cancelled_by_the_client_leave_the_server_healthy(served: Served) -> None:
    await assert_healthy(served.stub)  # loads the model
    model = served.plane.manager.peek("identity")
    assert model is not None
    with HeldRuns(model.runtime) as held:  # the calls are in the server when they are cancelled
        calls = [asyncio.ensure_future(served.stub("ModelInfer", **identity_request())) for _ in range(32)]
        await held.started()
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    await assert_healthy(served.stub)


async def test_a_client_deadline_is_honoured(served: Served) -> None:
    """grpc-core sends `grpc-timeout`; a generous one lets the call through unchanged."""
    call = served.stub.channel.unary_unary(
        method_path("ModelInfer"),
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    answer = await call(pb.ModelInferRequest(**identity_request()), timeout=30)
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32), ROW)
