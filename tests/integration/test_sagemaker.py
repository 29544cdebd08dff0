"""SageMaker's container contract in-process: every route, every refusal, and health after each."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity, write_config

MiB = 1 << 20
ROW = [i / 16 for i in range(16)]
TARGET = "X-Amzn-SageMaker-Target-Model"


def sagemaker_settings(repo: Path, **overrides: Any) -> ServerSettings:
    options: dict[str, Any] = {
        "intra_op_threads": 1,
        "startup_load": StartupLoad.ALL,
        "sagemaker": True,
    } | overrides
    return ServerSettings(repository=repo, **options)


@pytest.fixture
async def client(repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sagemaker_settings(repo)) as c:
        yield c


async def invoke(
    client: httpx.AsyncClient, doc: Any, model: str = "identity", **headers: str
) -> httpx.Response:
    return await client.post("/invocations", json=doc, headers={TARGET: model, **headers})


async def assert_healthy(client: httpx.AsyncClient) -> None:
    """The server still answers good requests correctly, on both fronts."""
    assert (await client.get("/ping")).status_code == 200
    r = await invoke(client, {"instances": [ROW]}, "identity.tar.gz")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [ROW]}
    v2 = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
    assert (await client.post("/v2/models/identity/infer", json=v2)).json()["outputs"][0]["data"] == ROW


async def expect_error(
    client: httpx.AsyncClient, response: httpx.Response, status: int, message: str
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert message in body["error"], body["error"]
    await assert_healthy(client)


# -- health ------------------------------------------------------------------------------------------------


async def test_ping_follows_readiness_and_draining(repo: Path) -> None:
    ctx = client_for(sagemaker_settings(repo))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ctx.app), base_url="http://x") as early:
        r = await early.get("/ping")
        assert (r.status_code, r.json()) == (503, {"ready": False})
    async with ctx as client:
        assert (await client.get("/ping")).json() == {"ready": True}
        ctx.plane.draining = True
        assert (await client.get("/ping")).status_code == 503
        ctx.plane.draining = False
        await assert_healthy(client)


async def test_the_contract_is_served_only_in_sagemaker_mode(settings: ServerSettings) -> None:
    async with client_for(settings) as client:
        r = await client.get("/ping")
        assert r.status_code == 404
        assert r.json() == {"error": "no route for GET /ping"}


# -- invocations -----------------------------------------------------------------------------------------------


async def test_invocations_in_every_body_shape(client: httpx.AsyncClient) -> None:
    rows = [ROW, ROW[::-1]]
    assert (await invoke(client, {"instances": rows})).json() == {"predictions": rows}
    assert (await invoke(client, {"inputs": rows}, "identity.tgz")).json() == {"predictions": rows}
    v2 = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": rows}]}
    r = await invoke(client, v2)
    assert r.headers["content-type"] == "application/json"
    assert r.json()["id"] == "r1" and r.json()["outputs"][0]["data"] == ROW + ROW[::-1]
    pairs = {"instances": [{"a": [1, 2, 3, 4], "b": [1, 1, 1, 1]}, {"a": [0, 0, 0, 0], "b": [2, 2, 2, 2]}]}
    assert (await invoke(client, pairs, "add_sub")).json() == {
        "predictions": [
            {"sum": [2, 3, 4, 5], "diff": [0, 1, 2, 3]},
            {"sum": [2, 2, 2, 2], "diff": [-2, -2, -2, -2]},
        ]
    }
    text = await invoke(client, {"instances": [["hello", "world"]]}, "strings")
    assert text.json() == {"predictions": [["hello", "world"]]}
    fixed = [[1, 2, 3], [4, 5, 6]]
    assert (await invoke(client, {"instances": [fixed]}, "fixed")).json() == {"predictions": [fixed]}


async def test_binary_v2_bodies_with_either_header_convention(client: httpx.AsyncClient) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 128},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + x.tobytes()
    for headers in (
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        {"Content-Type": f"application/vnd.sagemaker-triton.binary+json;json-header-size={len(header)}"},
    ):
        r = await client.post("/invocations", content=body, headers={TARGET: "identity", **headers})
        assert r.status_code == 200, r.text
        length = int(r.headers["inference-header-content-length"])
        assert (
            r.headers["content-type"]
            == f"application/vnd.sagemaker-triton.binary+json;json-header-size={length}"
        )
        assert json.loads(r.content[:length])["outputs"][0]["parameters"] == {"binary_data_size": 128}
        assert np.array_equal(np.frombuffer(r.content[length:], dtype=np.float32).reshape(2, 16), x)
    refused = await client.post(
        "/invocations", content=body, headers={TARGET: "identity", "Accept": "application/json", **headers}
    )
    await expect_error(
        client, refused, 406, "the answer would be application/vnd.sagemaker-triton.binary+json"
    )


async def test_invoke_route_is_invocations_for_one_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/models/identity/invoke", json={"instances": [ROW]})
    assert r.json() == {"predictions": [ROW]}
    r = await client.post("/models/nosuch/invoke", json={"instances": [ROW]})
    await expect_error(client, r, 404, "model 'nosuch' not found")


async def test_without_the_header_the_default_or_only_model_runs(repo: Path, tmp_path: Path) -> None:
    async with client_for(sagemaker_settings(repo)) as client:
        r = await client.post("/invocations", json={"instances": [ROW]})
        await expect_error(client, r, 400, "name the model in the X-Amzn-SageMaker-Target-Model header")
    async with client_for(sagemaker_settings(repo, sagemaker_default_model="identity")) as client:
        assert (await client.post("/invocations", json={"instances": [ROW]})).json() == {"predictions": [ROW]}
    identity(tmp_path / "only" / "1" / "model.onnx")
    async with client_for(sagemaker_settings(tmp_path)) as client:
        assert (await client.post("/invocations", json={"instances": [ROW]})).json() == {"predictions": [ROW]}


@pytest.mark.parametrize(
    "value", ["../identity", "../identity.tar.gz", "a/identity", "/etc/passwd", "..", ""]
)
async def test_target_model_values_that_are_not_names_are_400(client: httpx.AsyncClient, value: str) -> None:
    r = await invoke(client, {"instances": [ROW]}, value)
    await expect_error(client, r, 400, "X-Amzn-SageMaker-Target-Model: invalid model name")


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b"{not json", {}, 400, "request body is not valid JSON"),
        (
            b'{"instances": [[1, 2]]}',
            {},
            400,
            "input 'input': shape [1, 2] does not match the model's [-1, 16]",
        ),
        (b'{"instances": [["a"]]}', {}, 400, "FP32 data must be numbers"),
        (b'{"rows": []}', {}, 400, "needs 'instances'"),
        (b"a,b\n1,2", {"Content-Type": "text/csv"}, 415, "Content-Type 'text/csv' is not supported"),
        (b'{"instances": []}', {"Accept": "text/csv"}, 406, "Accept 'text/csv' allows none of"),
        (
            b"{}",
            {"Content-Type": "application/octet-stream"},
            400,
            "needs the Inference-Header-Content-Length",
        ),
        (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "but the body has only 2 bytes"),
    ],
)
async def test_bad_invocations_are_refused(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    r = await client.post("/invocations", content=content, headers={TARGET: "identity", **headers})
    await expect_error(client, r, status, message)


async def test_unknown_models_are_404(client: httpx.AsyncClient) -> None:
    r = await invoke(client, {"instances": [ROW]}, "nosuch.tar.gz")
    await expect_error(client, r, 404, "model 'nosuch' not found")


async def test_invocations_count_in_the_metrics(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await invoke(client, {"instances": [ROW]})).status_code == 200
    assert (await invoke(client, {"instances": [[1]]})).status_code == 400
    assert (await invoke(client, {"instances": [ROW]}, "../x")).status_code == 400
    text = (await client.get("/metrics")).text
    series = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = "modelfleet_requests_total"
    assert series[(key, (("model", "identity"), ("status_class", "2xx")))] == 2
    assert series[(key, (("model", "identity"), ("status_class", "4xx")))] == 1
    assert series[(key, (("model", "_other"), ("status_class", "4xx")))] == 1


# -- the multi-model API -----------------------------------------------------------------------------------


async def test_load_unload_describe_cycle(client: httpx.AsyncClient, repo: Path) -> None:
    assert (await client.get("/models/auto")).json() == {"modelName": "auto", "modelUrl": f"{repo}/auto"}
    r = await client.post("/models", json={"model_name": "auto"})
    await expect_error(client, r, 409, "model 'auto' is already loaded")
    assert (await client.delete("/models/auto")).json() == {"modelName": "auto"}
    await expect_error(client, await client.get("/models/auto"), 404, "model 'auto' not found")
    await expect_error(client, await client.delete("/models/auto"), 404, "model 'auto' not found")
    r = await invoke(client, {"instances": [ROW]}, "auto")
    assert r.status_code == 404, r.text  # unloaded on request: stays out until loaded again
    url = str(repo / "auto")
    r = await client.post("/models", json={"model_name": "auto", "url": url})
    assert (r.status_code, r.json()) == (200, {"modelName": "auto", "modelUrl": url})
    assert (await client.get("/models/auto")).json()["modelUrl"] == url
    assert (await invoke(client, {"instances": [ROW]}, "auto")).json() == {"predictions": [ROW]}
    await assert_healthy(client)


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"model_name": "nosuch"}, 404, "model 'nosuch' not found"),
        ({"model_name": "../identity"}, 400, "invalid model name"),
        ({"url": "/x"}, 400, "'model_name' must be a string"),
        ({"model_name": "auto", "url": "/etc"}, 400, "url '/etc' is not inside the model repository"),
        ({"model_name": "auto", "url": "../elsewhere"}, 400, "is not inside the model repository"),
        ({"model_name": "auto", "url": "file:///etc"}, 400, "is not inside the model repository"),
        ({"model_name": "auto", "url": 3}, 400, "'url' must be a string"),
        ({"model_name": "broken"}, 400, "failed to load model 'broken'"),
        ([], 400, "must be a JSON object"),
    ],
)
async def test_bad_loads_are_refused(client: httpx.AsyncClient, doc: Any, status: int, message: str) -> None:
    await expect_error(client, await client.post("/models", json=doc), status, message)


async def test_load_refuses_other_media_types_and_bad_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/models", content=b"model_name=auto", headers={"Content-Type": "text/plain"})
    await expect_error(client, r, 415, "Content-Type 'text/plain' is not supported; send application/json")
    r = await client.post("/models", content=b"{oops", headers={"Content-Type": "application/json"})
    await expect_error(client, r, 400, "request body is not valid JSON")
    r = await client.get("/models", headers={"Accept": "text/html"})
    await expect_error(client, r, 406, "allows none of application/json")


async def test_a_url_through_a_link_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    identity(tmp_path / "repo" / "m" / "1" / "model.onnx")
    (tmp_path / "outside").mkdir()
    (tmp_path / "repo" / "link").symlink_to(tmp_path / "outside")
    async with client_for(sagemaker_settings(tmp_path / "repo", startup_load=StartupLoad.NONE)) as client:
        r = await client.post("/models", json={"model_name": "m", "url": str(tmp_path / "repo" / "link")})
        assert r.status_code == 400 and "not inside the model repository" in r.json()["error"]
        r = await client.post("/models", json={"model_name": "m", "url": "m/1"})
        assert r.status_code == 200, r.text
        assert (await invoke(client, {"instances": [ROW]}, "m")).json() == {"predictions": [ROW]}


async def test_list_models_is_paged(client: httpx.AsyncClient) -> None:
    index = (await client.post("/v2/repository/index", json={"ready": True})).json()
    loaded = sorted({e["name"] for e in index})  # one entry per version
    assert len(loaded) >= 5
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"max_results": "2"} | ({"next_page_token": token} if token else {})
        doc = (await client.get("/models", params=params)).json()
        assert len(doc["models"]) <= 2
        seen += [m["modelName"] for m in doc["models"]]
        token = doc.get("nextPageToken")
        if token is None:
            break
    assert seen == loaded
    everything = (await client.get("/models")).json()
    assert [m["modelName"] for m in everything["models"]] == loaded and "nextPageToken" not in everything


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("max_results=0", "'max_results' must be an integer from 1 to 1000, got '0'"),
        ("max_results=5000", "'max_results' must be an integer from 1 to 1000"),
        ("max_results=two", "'max_results' must be an integer from 1 to 1000"),
        ("next_page_token=..%2Fx", "'next_page_token' is not a token this server gave"),
    ],
)
async def test_bad_paging_is_400(client: httpx.AsyncClient, query: str, message: str) -> None:
    await expect_error(client, await client.get(f"/models?{query}"), 400, message)


async def test_a_load_that_does_not_fit_is_507(tmp_path: Path) -> None:
    identity(tmp_path / "small" / "1" / "model.onnx")
    identity(tmp_path / "huge" / "1" / "model.onnx")
    write_config(tmp_path / "huge", {"memory_bytes": 100 * MiB})
    settings = sagemaker_settings(
        tmp_path, startup_load=StartupLoad.NONE, memory_budget="25MiB", sagemaker_default_model="small"
    )
    async with client_for(settings) as client:
        r = await client.post("/models", json={"model_name": "huge"})
        assert r.status_code == 507, r.text
        assert r.json()["error"].startswith("model 'huge' needs 100.0 MiB but the memory budget is 25.0 MiB")
        assert (await client.get("/models")).json() == {"models": []}
        assert (await client.post("/models", json={"model_name": "small"})).status_code == 200
        assert (await client.post("/invocations", json={"instances": [ROW]})).json() == {"predictions": [ROW]}
        assert (await client.get("/ping")).status_code == 200


@pytest.mark.parametrize("depth", [100, 5000])
async def test_deep_json_invocations_are_400(client: httpx.AsyncClient, depth: int) -> None:
    content = ('{"instances": ' + "[" * depth + "1" + "]" * depth + "}").encode()
    r = await client.post("/invocations", content=content, headers={TARGET: "identity"})
    await expect_error(client, r, 400, "deeper than 64 levels")
