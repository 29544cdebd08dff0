"""Each setting does what it claims, through the real server (in-process ASGI client, real ONNX
models, the real gRPC front): the time bound on queueing (429 + Retry-After), the request timeout
as a cap on the V2 `timeout` parameter, SageMaker's body limit (413), proxy headers ignored by the
loopback rule, instances that really run side by side, and a gRPC client deadline.

Every test here was seen failing with the wiring it guards removed (see the report of issue 16)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc import method_path
from tests.hold import HeldRuns
from tests.integration.conftest import client_for
from tests.integration.test_grpc import grpc_settings, identity_request, serving
from tests.integration.test_scheduling import body
from tests.models import identity, write_config
from tests.waiting import until

ROW = [i / 16 for i in range(16)]
REMOTE = ("10.0.0.5", 1234)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    # one execution at a time, no batching: the tests hold it and watch what happens behind it
    identity(tmp_path / "m" / "1" / "model.onnx")
    write_config(tmp_path / "m", {"dynamic_batching": {"enabled": False}, "instances": 1})
    identity(tmp_path / "pair" / "1" / "model.onnx")
    write_config(tmp_path / "pair", {"dynamic_batching": {"enabled": False}, "instances": 2})
    return tmp_path


def settings(repo: Path, **overrides: Any) -> ServerSettings:
    options = {"startup_load": StartupLoad.ALL, "intra_op_threads": 1} | overrides
    return ServerSettings(repository=repo, **options)


def model_of(app: client_for, name: str) -> Any:
    model = app.plane.manager.peek(name)
    assert model is not None
    return model


# -- max_queue_wait_s: a time-bounded 429 ----------------------------------------------------------------


async def test_max_queue_wait_refuses_with_429_and_a_retry_after_from_the_queued_time(repo: Path) -> None:
    app = client_for(settings(repo, max_queue_wait_s=1.5, max_queue_size=100))
    async with app as client:
        model = model_of(app, "m")
        with HeldRuns(model.runtime) as held:
            running = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
            await held.started()
            model.executor.ns_per_row = 1e9  # the model's measured cost: as if a run took 1 s a row
            queued = asyncio.create_task(client.post("/v2/models/m/infer", json=body(2.0)))
            await until(lambda: model.executor.pending == 2, "the second request queued (1 s of work ahead)")
            # 2 rows x 1 s > 1.5 s: refused at once, far below the count limit (100)
            r = await asyncio.wait_for(client.post("/v2/models/m/infer", json=body(3.0)), 3)
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "2"  # the queued work, rounded up to whole seconds
            assert r.json() == {
                "error": "model 'm' is saturated: about 2000 ms of work is queued (the limit is 1500 ms); "
                "try again later"
            }
            held.release()
            assert (await running).status_code == 200
            assert (await queued).status_code == 200


async def test_without_max_queue_wait_the_same_queue_is_admitted(repo: Path) -> None:
    """The control of the test above: with the bound off (0), only the count limits the queue."""
    app = client_for(settings(repo, max_queue_wait_s=0, max_queue_size=100))
    async with app as client:
        model = model_of(app, "m")
        with HeldRuns(model.runtime) as held:
            tasks = [asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))]
            await held.started()
            model.executor.ns_per_row = 1e9
            tasks += [
                asyncio.create_task(client.post("/v2/models/m/infer", json=body(v))) for v in (2.0, 3.0)
            ]
            await until(lambda: model.executor.pending == 3, "all three admitted")
            held.release()
            assert [(await t).status_code for t in tasks] == [200, 200, 200]


# -- request_timeout_s: the cap on the V2 `timeout` parameter ----------------------------------------------


async def test_request_timeout_caps_a_longer_v2_timeout(repo: Path) -> None:
    app = client_for(settings(repo, request_timeout_s=0.2))
    async with app as client:
        model = model_of(app, "m")
        with HeldRuns(model.runtime) as held:
            started = time.monotonic()
            asking = client.post("/v2/models/m/infer", json=body(1.0, timeout=30_000_000))  # asks for 30 s
            r = await asyncio.wait_for(asking, 5)
            elapsed = time.monotonic() - started
            assert held.entered.is_set()  # it was running, held, when the cap ended it
            assert r.status_code == 504, r.text
            assert r.json() == {"error": "model 'm': request timed out after 0.2 s while running"}
            assert elapsed >= 0.2
            queued = client.post("/v2/models/m/infer", json=body(2.0, timeout=30_000_000))
            r = await asyncio.wait_for(queued, 5)  # queued behind the held run: capped too
            assert r.status_code == 504, r.text
            assert r.json() == {
                "error": "model 'm': request timed out after 0.2 s while queued (it will not run)"
            }
            assert held.calls == 1
        r = await client.post("/v2/models/m/infer", json=body(3.0))  # a request with no timeout of its own
        assert r.status_code == 200


# -- SageMaker: 413 past max_body_bytes ---------------------------------------------------------------------


async def test_sagemaker_refuses_a_body_over_max_body_bytes_with_413(repo: Path) -> None:
    limit = 4096
    app = client_for(settings(repo, sagemaker=True, max_body_bytes=limit))
    async with app as client:
        headers = {"X-Amzn-SageMaker-Target-Model": "m", "Content-Type": "application/json"}
        small = {"instances": [ROW]}
        r = await client.post("/invocations", json=small, headers={"X-Amzn-SageMaker-Target-Model": "m"})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [ROW]}
        large = b'{"instances": [[' + b", ".join([b"0.25"] * 2000) + b"]]}"
        assert len(large) > limit
        chunks = [large[i : i + 1000] for i in range(0, len(large), 1000)]

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for chunk in chunks:
                yield chunk

        for content in (large, streamed()):
            for path in ("/invocations", "/models/m/invoke"):
                if not isinstance(content, bytes) and path != "/invocations":
                    continue  # the generator is spent
                r = await client.post(path, content=content, headers=headers)
                assert r.status_code == 413, r.text
                assert r.headers["content-type"] == "application/json"
                assert f"larger than max_body_bytes ({limit} bytes)" in r.json()["error"]
        r = await client.post("/invocations", json=small, headers={"X-Amzn-SageMaker-Target-Model": "m"})
        assert r.status_code == 200  # still serving


# -- X-Forwarded-For and friends never make a client local --------------------------------------------------


FORWARDED = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"}


async def test_forwarded_headers_do_not_make_a_remote_client_loopback(repo: Path) -> None:
    app = client_for(settings(repo, sagemaker=True))  # no admin key: control from loopback only
    async with app as local:
        transport = httpx.ASGITransport(app=app.app, client=REMOTE)
        async with httpx.AsyncClient(transport=transport, base_url="http://modelfleet") as remote:
            for client, headers in ((remote, FORWARDED), (remote, {})):
                r = await client.post("/v2/repository/models/m/load", headers=headers)
                assert r.status_code == 403, r.text
                assert "only from loopback clients" in r.json()["error"]
                r = await client.delete("/models/m", headers=headers)  # SageMaker's unload
                assert r.status_code == 403, r.text
                assert "only from loopback clients" in r.json()["error"]
            # nor does a header make a loopback client remote: it is the TCP peer that counts
            r = await local.post("/v2/repository/models/m/load", headers={"X-Forwarded-For": "10.0.0.5"})
            assert r.status_code == 200, r.text
            r = await remote.post("/v2/models/m/infer", json=body(1.0), headers=FORWARDED)
            assert r.status_code == 200  # inference is open without keys, wherever it comes from


# -- instances: side by side, not one after the other -------------------------------------------------------


class Meeting:
    """Replaces a runtime's `infer` by one that goes on only once `parties` calls are in it at the
    same time (threading.Barrier): a model whose instances were serialised fails (broken barrier)."""

    def __init__(self, runtime: Any, parties: int) -> None:
        self.runtime = runtime
        self.barrier = threading.Barrier(parties, timeout=5)
        self.threads: set[str] = set()
        self._real = runtime.infer

    def __enter__(self) -> Meeting:
        self.runtime.infer = self._infer
        return self

    def __exit__(self, *exc: object) -> None:
        self.barrier.abort()
        del self.runtime.infer

    def _infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()
        return self._real(inputs, outputs)  # type: ignore[no-any-return]


async def test_two_instances_run_two_requests_at_the_same_time(repo: Path) -> None:
    app = client_for(settings(repo))
    async with app as client:
        model = model_of(app, "pair")
        with Meeting(model.runtime, 2) as meeting:
            answers = await asyncio.gather(
                *(client.post("/v2/models/pair/infer", json=body(float(v))) for v in (1.0, 2.0))
            )
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert [r.json()["outputs"][0]["data"][0] for r in answers] == [1.0, 2.0]
        assert meeting.threads == {"model:pair/1#0", "model:pair/1#1"}


# -- a gRPC client deadline over the real gRPC front ---------------------------------------------------------


class Recorded(HeldRuns):
    """HeldRuns that also records the first input value of each run, in the order they run."""

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.seen: list[float] = []

    def _held(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.seen.append(float(inputs["input"].ravel()[0]))
        return super()._held(inputs, outputs)


def filled(value: float) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(**identity_request(np.full((1, 16), value, np.float32)))


async def test_a_grpc_client_deadline_expires_with_deadline_exceeded(tmp_path: Path) -> None:
    identity(tmp_path / "identity" / "1" / "model.onnx")
    write_config(tmp_path / "identity", {"dynamic_batching": {"enabled": False}, "instances": 1})
    async with serving(grpc_settings(tmp_path, startup_load=StartupLoad.ALL)) as served:
        model = served.plane.manager.peek("identity")
        assert model is not None
        infer = served.stub.channel.unary_unary(
            method_path("ModelInfer"),
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        with Recorded(model.runtime) as held:
            first = asyncio.ensure_future(infer(filled(1.0)))
            await held.started()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await infer(filled(2.0), timeout=0.3)  # queued behind the held run
            elapsed = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
            assert 0.3 <= elapsed < 5  # not before the deadline, and not after the held run
            await until(lambda: model.executor.pending == 1, "the expired call left the server's queue")
            held.release()
            answer = await asyncio.wait_for(first, 5)
            assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [1.0] * 16
            answer = await infer(filled(3.0), timeout=5)
            assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [3.0] * 16
            assert held.seen == [1.0, 3.0]  # the expired call never ran
