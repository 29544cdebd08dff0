"""Scheduling over HTTP: request timeouts, priorities, a full queue, clients that leave, the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.model import LoadedModel
from tests.hold import HeldRuns
from tests.integration.conftest import client_for
from tests.models import identity, write_config
from tests.waiting import until

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


class Gate(HeldRuns):
    """Holds every inference of a model until released (HeldRuns: `await gate.started()` once one
    is held); records the first value of each call, in the order they run."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model.runtime)
        self.model = model
        self.seen: list[float] = []

    def _held(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.seen.append(float(inputs["input"].ravel()[0]))
        return super()._held(inputs, outputs)

    async def queued(self, count: int) -> None:
        """Return once `count` requests are in the model's executor (running or queued)."""
        await until(lambda: self.model.executor.pending == count, f"{count} requests in the model's queue")


@pytest.fixture
def app(repo: Path) -> client_for:
    return client_for(settings(repo, max_queue_size=2))


async def test_timeout_parameter_ends_a_queued_request_with_504(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        with Gate(model) as gate:
            running = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
            await gate.started()
            r = await client.post("/v2/models/m/infer", json=body(2.0, timeout=50_000))  # 50 ms
            assert r.status_code == 504
            assert r.json() == {
                "error": "model 'm': request timed out after 0.05 s while queued (it will not run)"
            }
            gate.release()
            assert (await running).status_code == 200
            assert gate.seen == [1.0]  # the timed-out request never ran
            assert (await client.post("/v2/models/m/infer", json=body(3.0))).status_code == 200


async def test_a_full_queue_answers_429_with_retry_after_and_priority_gets_through(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        with Gate(model) as gate:
            first = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
            await gate.started()
            queued = asyncio.create_task(client.post("/v2/models/m/infer", json=body(2.0, priority=5)))
            await gate.queued(2)
            r = await client.post("/v2/models/m/infer", json=body(3.0))  # default priority: no room
            assert r.status_code == 429
            assert r.headers["retry-after"] == "1"
            assert "too many requests queued" in r.json()["error"]
            urgent = asyncio.create_task(client.post("/v2/models/m/infer", json=body(4.0, priority=1)))
            shed = await queued  # answered once 'urgent' took its place
            assert shed.status_code == 429
            assert "higher-priority request took this one's place" in shed.json()["error"]
            gate.release()
            assert (await first).status_code == 200
            assert (await urgent).status_code == 200
            assert gate.seen == [1.0, 4.0]


async def test_a_request_whose_client_left_is_dropped_from_the_queue(app: client_for) -> None:
    async with app as client:
        model = app.plane.manager.peek("m")
        assert model is not None
        model.stats.success_count, model.stats.compute_infer_ns = 1, 50_000_000  # looks slow: watch clients
        with Gate(model) as gate:
            first = asyncio.create_task(client.post("/v2/models/m/infer", json=body(1.0)))
            await gate.started()
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
            await gate.queued(2)  # it waits behind the held one
            left.set()
            await asyncio.wait_for(gone, 5)
            assert sent == []  # nobody to answer
            gate.release()
            assert (await first).status_code == 200
            # one executor thread, in order: once a later request has run, the abandoned one's turn
            # has passed
            assert (await client.post("/v2/models/m/infer", json=body(3.0))).status_code == 200
            assert gate.seen == [1.0, 3.0]  # the abandoned request never ran


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
