"""Scheduling over HTTP: request timeouts, priorities, a full queue, clients that leave, the cache."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.model import LoadedModel
from tests.integration.conftest import client_for
from tests.models import identity, write_config

ROW = [float(i) for i in range(16)]


def body(value: float = 0.0, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [value] * 16}]
    }
    if parameters:
        doc["parameters"] = parameters
    return doc


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    identity(tmp_path / "m" / "1" / "model.onnx")
    # one execution at a time: these tests hold it and watch what queues behind it
    write_config(tmp_path / "m", {"dynamic_batching": {"enabled": False}, "instances": 1})
    identity(tmp_path / "cached" / "1" / "model.onnx")
    write_config(tmp_path / "cached", {"response_cache": True})
    return tmp_path


def settings(repo: Path, **overrides: Any) -> ServerSettings:
    options = {"startup_load": StartupLoad.ALL, "intra_op_threads": 1} | overrides
    return ServerSettings(repository=repo, **options)


class Gate:
    """Holds every inference of a model until opened; records the first value of each call."""

    def __init__(self, model: LoadedModel) -> None:
        self.event = threading.Event()
        self.seen: list[float] = []
        self._real = model.runtime.infer

        def held(inputs, outputs):  # type: ignore[no-untyped-def]
            self.event.wait(10)
            self.seen.append(float(inputs["input"].ravel()[0]))
            return self._real(inputs, outputs)

        model.runtime.infer = held  # type: ignore[method-assign]


@pytest.fixture
def app(repo: Path) -> client_for:
    return client_for(settings(repo, max_queue_size=2))


async def test_timeout_parameter_ends_a_queued_request_with_504(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        gate = Gate(model)
        running = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
        await asyncio.sleep(0.05)
        r = await client.post("/v2/models/m/infer", json=body(2.0, timeout=50_000))  # 50 ms
        assert r.status_code == 504
        assert r.json() == {
            "error": "model 'm': request timed out after 0.05 s while queued (it will not run)"
        }
        gate.event.set()
        assert (await running).status_code == 200
        assert gate.seen == [1.0]  # the timed-out request never ran
        assert (await client.post("/v2/models/m/infer", json=body(3.0))).status_code == 200


async def test_a_full_queue_answers_429_with_retry_after_and_priority_gets_through(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        gate = Gate(model)
        first = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(client.post("/v2/models/m/infer", json=body(2.0, priority=5)))
        await asyncio.sleep(0.05)
        r = await client.post("/v2/models/m/infer", json=body(3.0))  # default priority: no room
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert "too many requests queued" in r.json()["error"]
        urgent = asyncio.create_task(client.post("/v2/models/m/infer", json=body(4.0, priority=1)))
        await asyncio.sleep(0.05)
        shed = await queued
        assert shed.status_code == 429
        assert "higher-priority request took this one's place" in shed.json()["error"]
        gate.event.set()
        assert (await first).status_code == 200
        assert (await urgent).status_code == 200
        assert gate.seen == [1.0, 4.0]


async def test_a_request_whose_client_left_is_dropped_from_the_queue(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        gate = Gate(model)
        model.stats.success_count, model.stats.compute_infer_ns = 1, 50_000_000  # looks slow: watch clients
        first = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
        await asyncio.sleep(0.05)
        left = asyncio.Event()
        payload = httpx.Request("POST", "http://x", json=body(2.0)).read()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "raw_path": b"/v2/models/m/infer",
                 "headers": [(b"content-length", str(len(payload)).encode())], "query_string": b""}  # fmt: skip
        gone = asyncio.create_task(app.app(scope, receive, send))
        await asyncio.sleep(0.05)
        left.set()
        await asyncio.wait_for(gone, 5)
        assert sent == []  # nobody to answer
        gate.event.set()
        assert (await first).status_code == 200
        await asyncio.sleep(0.05)
        assert gate.seen == [1.0]  # the abandoned request never ran


async def test_the_cache_answers_repeats_and_statistics_count_it(app: client_for) -> None:
    async with app as client:
        for _ in range(3):
            r = await client.post("/v2/models/cached/infer", json=body(7.0))
            assert r.json()["outputs"][0]["data"] == [7.0] * 16
        stats = (await client.get("/v2/models/cached/stats")).json()["model_stats"][0]["inference_stats"]
        assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (2, 1)
        await client.post("/v2/repository/models/cached/load")  # a reload forgets the old answers
        await client.post("/v2/models/cached/infer", json=body(7.0))
        stats = (await client.get("/v2/models/cached/stats")).json()["model_stats"][0]["inference_stats"]
        assert (stats["cache_hit"]["count"], stats["cache_miss"]["count"]) == (0, 1)
