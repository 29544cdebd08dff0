"""Many models per node over HTTP: on-demand loads, the memory budget, eviction, versions by name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.memory import process_rss, release_free_memory
from tests.hold import HeldRuns
from tests.integration.conftest import client_for
from tests.models import _save, adapter, identity, write_config

MiB = 1 << 20
ROW = [i / 16 for i in range(16)]


def body(data: list[float] | None = None, name: str = "input") -> dict[str, Any]:
    values = ROW if data is None else data
    return {"inputs": [{"name": name, "shape": [1, len(values)], "datatype": "FP32", "data": values}]}


def heavy(path: Path, megabytes: int) -> Path:
    """y = W[rows]: a lookup table of `megabytes` MiB stored inline, small requests and answers."""
    n = megabytes * MiB // 4
    table = numpy_helper.from_array(np.arange(n, dtype=np.float32).reshape(n, 1), "W")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["W", "rows"], ["y"])],
        "heavy",
        [helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [table],
    )
    return _save(graph, path)


ROWS = {"inputs": [{"name": "rows", "shape": [2], "datatype": "INT64", "data": [3, 7]}]}


def settings_for(root: Path, **overrides: Any) -> ServerSettings:
    options = {"startup_load": StartupLoad.NONE, "memory_budget": "1GiB", "intra_op_threads": 1} | overrides
    return ServerSettings(repository=root, **options)


async def index_of(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    entries = (await client.post("/v2/repository/index")).json()
    return next(e for e in entries if e["name"] == name)


async def test_first_request_loads_the_model_and_the_index_tells(tmp_path: Path) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    async with client_for(settings_for(tmp_path)) as client:
        assert (await index_of(client, "m"))["reason"] == "not loaded"
        r = await client.get("/v2/models/m/ready")
        assert r.status_code == 503
        assert "is not resident; it is loaded by its first inference request" in r.json()["error"]
        responses = await asyncio.gather(*(client.post("/v2/models/m/infer", json=body()) for _ in range(20)))
        assert {r.status_code for r in responses} == {200}
        entry = await index_of(client, "m")
        assert (entry["state"], entry["loads"], entry["cold_starts"]) == ("READY", 1, 1)
        stats = (await client.get("/v2/models/m/stats")).json()
        assert stats["model_stats"][0]["residency"]["loads"] == 1
        assert stats["memory"]["cold_starts"] == 1
        assert stats["memory"]["resident_models"] == 1


async def test_eviction_under_the_budget_and_507_with_the_sizes(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        identity(tmp_path / name / "1" / "model.onnx")
        write_config(tmp_path / name, {"memory_bytes": 10 * MiB})
    identity(tmp_path / "huge" / "1" / "model.onnx")
    write_config(tmp_path / "huge", {"memory_bytes": 100 * MiB})
    async with client_for(settings_for(tmp_path, memory_budget="25MiB")) as client:
        for name in ("a", "b", "c"):
            assert (await client.post(f"/v2/models/{name}/infer", json=body())).status_code == 200
        a = await index_of(client, "a")
        assert (a["state"], a["reason"], a["evictions"]) == ("EVICTED", "evicted to make room for 'c'", 1)
        r = await client.post("/v2/models/huge/infer", json=body())
        assert r.status_code == 507
        assert r.json()["error"].startswith("model 'huge' needs 100.0 MiB but the memory budget is 25.0 MiB")
        assert (await client.post("/v2/models/b/infer", json=body())).status_code == 200  # still healthy
        assert (await client.post("/v2/models/a/infer", json=body())).status_code == 200  # back on demand


async def test_versions_by_alias_and_traffic_split_over_http(tmp_path: Path) -> None:
    for v in (1, 2):
        identity(tmp_path / "ab" / str(v) / "model.onnx")
    write_config(
        tmp_path / "ab",
        {"version_policy": {"all": True}, "aliases": {"stable": 1, "canary": 2}, "traffic": {1: 1, 2: 1}},
    )
    async with client_for(settings_for(tmp_path, startup_load=StartupLoad.ALL)) as client:
        r = await client.post("/v2/models/ab/versions/canary/infer", json=body())
        assert r.json()["model_version"] == "2"
        versions = [
            (await client.post("/v2/models/ab/infer", json=body())).json()["model_version"] for _ in range(60)
        ]
        assert {"1", "2"} == set(versions)
        r = await client.post("/v2/models/ab/versions/beta/infer", json=body())
        assert r.status_code == 404
        assert r.json() == {"error": "model 'ab' has no version alias 'beta'"}


async def test_adapters_over_http_answer_with_their_own_name(tmp_path: Path) -> None:
    identity(tmp_path / "base" / "1" / "model.onnx", "FP32", ("batch", 4))
    adapter(tmp_path, "tenant-a", "base", np.eye(2, 4), np.zeros(2))
    async with client_for(settings_for(tmp_path)) as client:
        r = await client.post("/v2/models/tenant-a/infer", json=body([1.0, 2.0, 3.0, 4.0]))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == "tenant-a"
        assert doc["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]
        meta = (await client.get("/v2/models/tenant-a")).json()
        assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]


async def test_unload_lets_requests_in_flight_finish_then_404_and_memory_returns(tmp_path: Path) -> None:
    heavy(tmp_path / "big" / "1" / "model.onnx", 32)
    ctx = client_for(settings_for(tmp_path))
    async with ctx as client:
        release_free_memory()
        before = process_rss().anonymous
        r = await client.post("/v2/models/big/infer", json=ROWS)
        assert r.json()["outputs"][0]["data"] == [3.0, 7.0]
        assert process_rss().anonymous - before > 24 * MiB  # the 32 MiB weight is resident
        model = ctx.plane.manager.resident("big")
        assert model is not None
        with HeldRuns(model.runtime) as held:
            in_flight = asyncio.create_task(client.post("/v2/models/big/infer", json=ROWS))
            await held.started()
            unloading = asyncio.create_task(client.post("/v2/repository/models/big/unload"))
            for _ in range(100):  # each call lets the unload task take a step
                if (await index_of(client, "big"))["state"] != "READY":
                    break
            assert (await index_of(client, "big"))["state"] == "UNLOADING"
            r = await client.post("/v2/models/big/infer", json=ROWS)
            assert r.status_code == 404  # new requests are refused at once
            assert not unloading.done()  # it waits for the request in flight
            held.release()
            assert (await in_flight).status_code == 200  # the one in flight finished normally
            assert (await unloading).status_code == 200
        del model
        release_free_memory()
        assert process_rss().anonymous - before < 8 * MiB  # returned


@pytest.mark.parametrize("cycles", [200])
async def test_load_unload_churn_keeps_memory_flat(tmp_path: Path, cycles: int) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    async with client_for(settings_for(tmp_path)) as client:
        for _ in range(20):  # settle allocator pools first
            await client.post("/v2/repository/models/m/load")
            await client.post("/v2/models/m/infer", json=body())
            await client.post("/v2/repository/models/m/unload")
        release_free_memory()
        start = process_rss().anonymous
        for _ in range(cycles):
            assert (await client.post("/v2/repository/models/m/load")).status_code == 200
            assert (await client.post("/v2/models/m/infer", json=body())).status_code == 200
            assert (await client.post("/v2/repository/models/m/unload")).status_code == 200
        release_free_memory()
        assert process_rss().anonymous - start < 8 * MiB
