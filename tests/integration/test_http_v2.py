"""The V2 REST surface end to end in-process: every route, every bad input, and health after each."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import httpx
import numpy as np
import pytest

from modelfleet.config import ServerSettings
from tests.integration.conftest import client_for

ROW = [i / 16 for i in range(16)]


def infer_body(data: Any = None, shape: Any = (1, 16), **top: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input", "shape": list(shape), "datatype": "FP32", "data": ROW if data is None else data}
        ],
        **top,
    }


async def assert_healthy(client: httpx.AsyncClient) -> None:
    """The server still answers a good request correctly."""
    r = await client.post("/v2/models/identity/infer", json=infer_body())
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ROW
    assert (await client.get("/v2/health/ready")).status_code == 200


async def expect_error(
    client: httpx.AsyncClient, response: httpx.Response, status: int, message: str
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert message in body["error"], body["error"]
    await assert_healthy(client)


# -- health and metadata ------------------------------------------------------------------------------


async def test_health_and_server_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "modelfleet"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


async def test_readiness_is_503_until_models_are_loaded(settings: ServerSettings) -> None:
    ctx = client_for(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ctx.app), base_url="http://x") as early:
        r = await early.get("/v2/health/ready")
        assert r.status_code == 503
        assert r.json() == {"ready": False}
        assert (await early.get("/v2/health/live")).status_code == 200
    await ctx.plane.manager.close()


async def test_model_metadata_ready_and_config(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/identity")).json()
    assert meta == {
        "name": "identity",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 16]}],
    }
    assert (await client.get("/v2/models/versioned")).json()["versions"] == ["1", "2"]
    assert (await client.get("/v2/models/versioned/versions/1")).status_code == 200
    ready = await client.get("/v2/models/identity/versions/1/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    config = (await client.get("/v2/models/identity/config")).json()
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [16]}]
    fixed = (await client.get("/v2/models/fixed/config")).json()
    assert fixed["max_batch_size"] == 0
    assert fixed["input"][0]["dims"] == [2, 3]


async def test_auto_completed_model_serves_without_config(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/auto")).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    r = await client.post("/v2/models/auto/infer", json=infer_body())
    assert r.json()["outputs"][0]["data"] == ROW


# -- inference ------------------------------------------------------------------------------------------


async def test_json_inference_echoes_the_id(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/models/identity/versions/1/infer", json=infer_body(id="abc-1"))
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == "abc-1"
    assert doc["model_name"] == "identity"
    assert doc["model_version"] == "1"
    assert doc["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [1, 16], "data": ROW}]


async def test_nested_data_and_batches(client: httpx.AsyncClient) -> None:
    rows = [ROW, [-x for x in ROW]]
    r = await client.post("/v2/models/identity/infer", json=infer_body(data=rows, shape=(2, 16)))
    assert r.json()["outputs"][0]["data"] == rows[0] + rows[1]


async def test_requested_outputs_and_integer_math(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [1, 4], "datatype": "INT64", "data": [10, 20, 30, 40]},
            {"name": "b", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]},
        ],
        "outputs": [{"name": "diff"}],
    }
    doc = (await client.post("/v2/models/add_sub/infer", json=body)).json()
    assert doc["outputs"] == [{"name": "diff", "datatype": "INT64", "shape": [1, 4], "data": [9, 18, 27, 36]}]


def binary_request(
    inputs: list[tuple[str, str, list[int], bytes]], **top: Any
) -> tuple[bytes, dict[str, str]]:
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
            for n, d, s, raw in inputs
        ],
        **top,
    }
    head = json.dumps(header).encode()
    return head + b"".join(raw for *_, raw in inputs), {"Inference-Header-Content-Length": str(len(head))}


async def test_binary_in_and_out(client: httpx.AsyncClient) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    body, headers = binary_request(
        [("input", "FP32", [2, 16], x.tobytes())], parameters={"binary_data_output": True}
    )
    r = await client.post("/v2/models/identity/infer", content=body, headers=headers)
    assert r.status_code == 200
    n = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:n])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 128}
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], np.float32).reshape(2, 16), x)


async def test_strings_and_half_precision(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v2/models/strings/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["hello", "w\u00f6rld"]}
            ]
        },
    )
    assert r.json()["outputs"][0]["data"] == ["hello", "w\u00f6rld"]
    half = np.array([[1.5, -2.0, 0.25, 8.0]], dtype=np.float16)
    body, headers = binary_request(
        [("input", "FP16", [1, 4], half.tobytes())], parameters={"binary_data_output": True}
    )
    r = await client.post("/v2/models/half/infer", content=body, headers=headers)
    n = int(r.headers["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], np.float16), half.ravel())


async def test_model_without_batch_dimension(client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    assert (await client.post("/v2/models/fixed/infer", json=body)).json()["outputs"][0]["shape"] == [2, 3]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_request_bodies(client: httpx.AsyncClient, encoding: str) -> None:
    raw = json.dumps(infer_body()).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = await client.post("/v2/models/identity/infer", content=packed, headers={"Content-Encoding": encoding})
    assert r.json()["outputs"][0]["data"] == ROW


# -- bad input: a clear error, and the server still healthy --------------------------------------------------


async def test_unknown_model_and_version(client: httpx.AsyncClient) -> None:
    await expect_error(
        client, await client.post("/v2/models/nope/infer", json=infer_body()), 404, "model 'nope' not found"
    )
    await expect_error(
        client,
        await client.post("/v2/models/identity/versions/7/infer", json=infer_body()),
        404,
        "model 'identity' (version '7') not found",
    )
    await expect_error(client, await client.get("/v2/models/nope"), 404, "model 'nope' not found")
    await expect_error(client, await client.get("/v2/models/nope/ready"), 404, "not found")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/..%2F..%2Fetc/infer",
        "/v2/models/%2e%2e/infer",
        "/v2/models/a%5Cb/infer",
        "/v2/models/a%00/infer",
    ],
)
async def test_path_tricks_are_400(client: httpx.AsyncClient, path: str) -> None:
    request = client.build_request("POST", "http://modelfleet", json=infer_body())
    request.url = request.url.copy_with(raw_path=path.encode())
    await expect_error(client, await client.send(request), 400, "invalid characters or dot-segments")


async def test_dot_segments_in_the_raw_path_are_400(settings: ServerSettings) -> None:
    """httpx normalises '..' away, so this one goes to the ASGI app directly."""
    ctx = client_for(settings)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/../identity/infer",
        "headers": [],
        "raw_path": b"/v2/models/../identity/infer",
        "query_string": b"",
    }
    await ctx.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"dot-segments" in sent[1]["body"]
    await ctx.plane.manager.close()


@pytest.mark.parametrize("name", ["-bad", "a..b", "x" * 129, ".hidden"])
async def test_invalid_model_names_are_400(client: httpx.AsyncClient, name: str) -> None:
    await expect_error(
        client, await client.post(f"/v2/models/{name}/infer", json=infer_body()), 400, "invalid model name"
    )
    await expect_error(client, await client.get(f"/v2/models/{name}"), 400, "invalid model name")


async def test_unavailable_model_says_why(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/models/broken/infer", json=infer_body())
    await expect_error(
        client, r, 503, "model 'broken' failed to load: ONNX Runtime cannot load broken/1/model.onnx"
    )
    assert "/tmp" not in r.text
    index = (await client.post("/v2/repository/index")).json()
    broken = next(e for e in index if e["name"] == "broken")
    assert broken["state"] == "UNAVAILABLE"
    assert broken["reason"].startswith(
        "ONNX Runtime cannot load broken/1/model.onnx: Protobuf parsing failed"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP64", "data": ROW}]},
            "input 'input': datatype FP64 does not match the model's FP32",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 15], "datatype": "FP32", "data": ROW[:15]}]},
            "input 'input': shape [1, 15] does not match the model's [-1, 16]",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW[:3]}]},
            "input 'input': data has 3 elements, shape [1, 16] needs 16",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FLOAT", "data": ROW}]},
            "unknown datatype 'FLOAT'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP16", "data": ROW}]},
            "FP16 cannot be sent as JSON numbers",
        ),
        ({"inputs": []}, "missing input 'input' (FP32 [-1, 16]) for model 'identity'"),
        (
            {"inputs": [{"name": "other", "shape": [1, 16], "datatype": "FP32", "data": ROW}]},
            "unknown input 'other'",
        ),
        (
            {**infer_body(), "outputs": [{"name": "nope"}]},
            "unknown output 'nope' requested from model 'identity'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [9, 16], "datatype": "FP32", "data": ROW * 9}]},
            "batch size 9 is over the model's max_batch_size 8",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, -16], "datatype": "FP32", "data": ROW}]},
            "negative dimension",
        ),
        ({"inputs": {"name": "input"}}, "Expected `array`, got `object` - at `$.inputs`"),
        (
            {**infer_body(), "parameters": {"binary_data_output": "yes"}},
            "parameter 'binary_data_output' must be a boolean",
        ),
    ],
)
async def test_bad_tensors_are_400_naming_the_input(
    client: httpx.AsyncClient, body: Any, message: str
) -> None:
    await expect_error(client, await client.post("/v2/models/identity/infer", json=body), 400, message)


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v2/models/identity/infer", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    await expect_error(client, r, 400, "request body is not valid JSON")


@pytest.mark.parametrize(
    ("declared", "size", "message"),
    [
        (None, 60, "binary_data_size is 60 bytes, but shape [1, 16] of FP32 needs 64 bytes"),
        ("-3", 64, "Inference-Header-Content-Length must be a non-negative integer, got '-3'"),
        ("lots", 64, "must be a non-negative integer, got 'lots'"),
        ("100000", 64, "Inference-Header-Content-Length is 100000 but the body has only"),
    ],
)
async def test_bad_binary_framing(
    client: httpx.AsyncClient, declared: str | None, size: int, message: str
) -> None:
    body, headers = binary_request([("input", "FP32", [1, 16], bytes(size))])
    if declared is not None:
        headers["Inference-Header-Content-Length"] = declared
    await expect_error(
        client, await client.post("/v2/models/identity/infer", content=body, headers=headers), 400, message
    )


async def test_binary_without_header_length_is_not_json(client: httpx.AsyncClient) -> None:
    body, _ = binary_request([("input", "FP32", [1, 16], bytes(64))])
    await expect_error(
        client, await client.post("/v2/models/identity/infer", content=body), 400, "not valid JSON"
    )


async def test_wrong_method_and_unknown_route(client: httpx.AsyncClient) -> None:
    await expect_error(client, await client.get("/v2/models/identity/infer"), 405, "inference takes POST")
    await expect_error(client, await client.get("/v3/whatever"), 404, "no route for GET /v3/whatever")
    await expect_error(client, await client.delete("/v2/health/live"), 405, "DELETE is not allowed here")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v2/models/identity/infer", "POST"),
        ("PUT", "/v2/models/identity/versions/1/infer", "POST"),
        ("DELETE", "/v2/health/live", "GET, HEAD"),
        ("POST", "/v2/models/identity", "GET, HEAD"),
        ("GET", "/v2/repository/models/identity/load", "POST"),
        ("GET", "/v2/repository/index", "POST"),
    ],
)
async def test_every_405_says_what_is_allowed(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    r = await client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow  # RFC 9110: a 405 carries Allow
    assert set(r.json()) == {"error"}


async def test_unsupported_content_encoding_and_corrupt_gzip(client: httpx.AsyncClient) -> None:
    raw = json.dumps(infer_body()).encode()
    r = await client.post("/v2/models/identity/infer", content=raw, headers={"Content-Encoding": "br"})
    await expect_error(client, r, 400, "unsupported Content-Encoding 'br'")
    r = await client.post(
        "/v2/models/identity/infer", content=b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"}
    )
    await expect_error(client, r, 400, "request body is not valid gzip data")
    r = await client.post(
        "/v2/models/identity/infer", content=gzip.compress(raw)[:-12], headers={"Content-Encoding": "gzip"}
    )
    await expect_error(client, r, 400, "truncated")


# -- size limits ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def small(settings: ServerSettings):  # type: ignore[no-untyped-def]
    async with client_for(settings.model_copy(update={"max_body_bytes": 4096})) as c:
        yield c


async def test_body_over_the_limit_is_413_naming_the_setting(small: httpx.AsyncClient) -> None:
    big = json.dumps(infer_body(data=ROW * 40, shape=(40, 16))).encode()
    assert len(big) > 4096
    r = await small.post("/v2/models/identity/infer", content=big)
    await expect_error(small, r, 413, "larger than max_body_bytes (4096 bytes)")

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = await small.post("/v2/models/identity/infer", content=chunks())
    await expect_error(small, r, 413, "max_body_bytes")


async def test_gzip_bomb_is_413_after_decompression(small: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    assert len(bomb) < 4096
    r = await small.post("/v2/models/identity/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    await expect_error(small, r, 413, "request body after decompression is larger than max_body_bytes")


# -- repository and statistics extensions ----------------------------------------------------------------------------


async def test_repository_index_load_and_unload(client: httpx.AsyncClient) -> None:
    index = (await client.post("/v2/repository/index")).json()
    by_name = {(e["name"], e.get("version")): e for e in index}
    assert by_name[("identity", "1")]["state"] == "READY"
    assert by_name[("broken", "1")]["state"] == "UNAVAILABLE"
    ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert all(e["state"] == "READY" for e in ready)

    assert (await client.post("/v2/repository/models/auto/unload")).status_code == 200
    await expect_error(
        client,
        await client.post("/v2/models/auto/infer", json=infer_body()),
        404,
        "model 'auto' is not loaded",
    )
    assert (await client.post("/v2/repository/models/auto/load", json={})).status_code == 200
    assert (await client.post("/v2/models/auto/infer", json=infer_body())).status_code == 200


async def test_repository_refusals(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v2/repository/models/auto/load", json={"parameters": {"file:1/model.onnx": "AAAA"}}
    )
    await expect_error(client, r, 400, "model files cannot be uploaded through the load API")
    r = await client.post("/v2/repository/models/auto/load", json={"parameters": {"config": "{}"}})
    await expect_error(client, r, 400, "config overrides are not accepted")
    await expect_error(
        client, await client.post("/v2/repository/models/broken/load"), 400, "failed to load model 'broken'"
    )
    await expect_error(
        client, await client.post("/v2/repository/models/nope/load"), 404, "model 'nope' not found"
    )
    await expect_error(client, await client.post("/v2/repository/models/..x/load"), 400, "invalid model name")
    await expect_error(
        client, await client.post("/v2/repository/index", content=b"[1]"), 400, "must be a JSON object"
    )
    await expect_error(
        client,
        await client.post("/v2/repository/index", json={"ready": "yes"}),
        400,
        "'ready' must be a boolean",
    )
    await expect_error(client, await client.post("/v2/repository/index", content=b"{"), 400, "not valid JSON")


async def test_statistics_count_successes_failures_and_batches(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/v2/models/identity/infer", json=infer_body())
    await client.post("/v2/models/identity/infer", json=infer_body(data=ROW * 2, shape=(2, 16)))
    await client.post("/v2/models/identity/infer", json={"inputs": []})
    stats = (await client.get("/v2/models/identity/stats")).json()["model_stats"]
    assert len(stats) == 1
    s = stats[0]
    assert (s["name"], s["version"]) == ("identity", "1")
    assert s["inference_count"] == 5
    assert s["execution_count"] == 4
    assert s["inference_stats"]["success"]["count"] == 4
    assert s["inference_stats"]["fail"]["count"] == 1
    assert s["inference_stats"]["compute_infer"]["ns"] > 0
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]} == {1: 3, 2: 1}
    everything = (await client.get("/v2/models/stats")).json()["model_stats"]
    assert {m["name"] for m in everything} >= {"identity", "auto", "versioned"}
    versioned = (await client.get("/v2/models/versioned/versions/1/stats")).json()["model_stats"]
    assert [(m["name"], m["version"]) for m in versioned] == [("versioned", "1")]
    await expect_error(client, await client.get("/v2/models/nope/stats"), 404, "not found")


# -- hostile bodies: 400 naming the problem, nothing large allocated, the server healthy -------------------


def _deep(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (
            b'{"inputs":[{"name":"input","shape":[268435456],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}\0\0\0\0',
            {"Inference-Header-Content-Length": "104"},
            "BYTES data of 4 bytes cannot hold 268435456 elements",
        ),
        (
            b'{"inputs":[{"name":"input","shape":[0,9223372036854775807],"datatype":"FP32","data":[]}]}',
            {},
            "has a dimension over the limit",
        ),
        (
            f'{{"inputs":[{{"name":"input","shape":[1,16],"datatype":"FP32","data":{_deep(3000)}}}]}}'.encode(),
            {},
            "nests deeper than 64 levels",
        ),
        (
            f'{{"inputs":[{{"name":"input","shape":[1,16],"datatype":"FP32","data":[1]}}],"parameters":{{"p":{_deep(100)}}}}}'.encode(),
            {},
            "parameters nest deeper than 64 levels",
        ),
    ],
)
async def test_hostile_infer_bodies_are_400(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], message: str
) -> None:
    if "Inference-Header-Content-Length" in headers:
        assert content.index(b"\0") == int(headers["Inference-Header-Content-Length"])
    r = await client.post("/v2/models/identity/infer", content=content, headers=headers)
    await expect_error(client, r, 400, message)


@pytest.mark.parametrize("depth", [100, 5000])
async def test_deep_json_in_control_bodies_is_400(client: httpx.AsyncClient, depth: int) -> None:
    content = f'{{"parameters":{{"p":{_deep(depth)}}}}}'.encode()
    r = await client.post("/v2/repository/models/identity/load", content=content)
    await expect_error(client, r, 400, "deeper than 64 levels")


async def test_request_bytes_in_flight_are_bounded_server_wide(tmp_path: Any) -> None:
    from tests.hold import HeldRuns
    from tests.models import identity

    identity(tmp_path / "identity" / "1" / "model.onnx")
    settings = ServerSettings(
        repository=tmp_path,
        startup_load="all",
        intra_op_threads=1,
        max_body_bytes=4096,
        max_body_bytes_in_flight=4096,
    )
    big = json.dumps(infer_body(padding="x" * 2500)).encode()  # unknown parameters pass through
    assert 2500 < len(big) < 4096
    ctx = client_for(settings)
    async with ctx as client:
        model = ctx.plane.manager.resident("identity")
        assert model is not None
        with HeldRuns(model.runtime) as held:
            first = asyncio.create_task(client.post("/v2/models/identity/infer", content=big))
            await held.started()
            r = await client.post("/v2/models/identity/infer", content=big)
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "1"
            assert "max_body_bytes_in_flight" in r.json()["error"]
            small = asyncio.create_task(client.post("/v2/models/identity/infer", json=infer_body()))
            held.release()
            assert (await first).status_code == 200
            assert (await small).status_code == 200  # it fit beside the first
        assert (await client.post("/v2/models/identity/infer", content=big)).status_code == 200  # given back
