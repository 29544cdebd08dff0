"""The OpenAPI document (src/modelfleet/server/openapi.yaml) against the app that serves it: every
route the app serves is in the document and every operation of the document is served, the
document is what GET /v2/openapi.json answers and what docs/openapi.yaml holds, and it is valid
OpenAPI 3.1."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Route

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.server.app import build_app
from modelfleet.server.http import InferEndpoint
from modelfleet.server.openapi import openapi_document
from tests.integration.conftest import client_for

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
INFER_PATHS = {"/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"}


def sagemaker_settings(repo: Path) -> ServerSettings:
    return ServerSettings(
        repository=repo, intra_op_threads=1, startup_load=StartupLoad.ALL, sagemaker=True, grpc_port=0
    )


def documented() -> set[tuple[str, str]]:
    """(path template, METHOD) of every operation in the document."""
    paths: dict[str, dict[str, Any]] = openapi_document()["paths"]
    return {(path, method.upper()) for path, item in paths.items() for method in item if method in METHODS}


def served(settings: ServerSettings) -> set[tuple[str, str]]:
    """(path template, METHOD) of every route of the app `modelfleet serve` runs: the Starlette
    routes (HEAD, which Starlette adds to every GET route, left out) and the lean infer handler's
    two paths, which it serves for POST."""
    app, _ = build_app(settings)
    control = inspect.getclosurevars(app.app).nonlocals.get("control")
    assert isinstance(control, Starlette), "build_http_app no longer names its Starlette app 'control'"
    routes = {
        (route.path, method)
        for route in control.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    return routes | {(path, "POST") for path in INFER_PATHS}


def test_every_served_route_is_documented_and_every_documented_operation_is_served(repo: Path) -> None:
    app_routes = served(sagemaker_settings(repo))
    doc_routes = documented()
    assert app_routes - doc_routes == set(), "served but not in openapi.yaml"
    assert doc_routes - app_routes == set(), "in openapi.yaml but not served"
    # without --sagemaker only the SageMaker routes go
    v2_only = served(sagemaker_settings(repo).model_copy(update={"sagemaker": False}))
    sagemaker_paths = {p for p, item in openapi_document()["paths"].items() if _tags(item) == {"sagemaker"}}
    assert {p for p, _ in app_routes - v2_only} == sagemaker_paths


def _tags(item: dict[str, Any]) -> set[str]:
    return {tag for method, op in item.items() if method in METHODS for tag in op.get("tags", [])}


def test_the_infer_handler_serves_exactly_the_documented_infer_paths() -> None:
    assert InferEndpoint.match("/v2/models/m/infer") == ("m", None)
    assert InferEndpoint.match("/v2/models/m/versions/2/infer") == ("m", "2")
    assert {p for p in openapi_document()["paths"] if p.endswith("/infer")} == INFER_PATHS


def test_the_document_is_valid_openapi_3_1() -> None:
    import openapi_spec_validator as validator

    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


def test_docs_hold_the_same_document() -> None:
    package = ROOT / "src" / "modelfleet" / "server" / "openapi.yaml"
    docs = ROOT / "docs" / "openapi.yaml"
    assert yaml.safe_load(docs.read_text()) == yaml.safe_load(package.read_text()) == openapi_document()


def test_every_error_answer_is_the_error_envelope() -> None:
    """Each documented 4xx/5xx body is {"error": ...}; 405 documents Allow and 429 Retry-After."""
    doc = openapi_document()
    shared = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert "405" in op["responses"], (path, method)
            for status, answer in op["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                if path in ("/v2/health/ready", "/ping") and status == "503":
                    continue  # readiness answers {"ready": false}
                ref = answer.get("$ref", "")
                assert ref.startswith("#/components/responses/"), (path, method, status)
    envelope = {"$ref": "#/components/schemas/Error"}
    for name, answer in shared.items():
        assert answer["content"]["application/json"]["schema"] == envelope, name
    assert "Allow" in shared["MethodNotAllowed"]["headers"]
    assert "Retry-After" in shared["TooManyRequests"]["headers"]


@pytest.fixture
async def client(repo: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sagemaker_settings(repo)) as c:
        yield c


async def test_the_server_serves_its_document(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == openapi_document()


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"worker": "0", "version": "1"}.get(m[1], "identity"), path)


async def test_every_documented_operation_is_routed(client: httpx.AsyncClient) -> None:
    """Asked with its documented method, no operation answers 'no route' or 405."""
    for path, method in sorted(documented()):
        if "unload" in path or method == "DELETE":
            continue  # leave the models loaded; the route tables above cover these
        r = await client.request(method, _concrete(path))
        assert r.status_code != 405, (method, path, r.text)
        assert not (r.status_code == 404 and r.json()["error"].startswith("no route")), (method, path)


async def test_a_wrong_method_is_405_with_an_allow_header(client: httpx.AsyncClient) -> None:
    for path, item in openapi_document()["paths"].items():
        allowed = {m.upper() for m in item if m in METHODS}
        wrong = "PATCH"
        r = await client.request(wrong, _concrete(path))
        assert r.status_code == 405, (path, r.status_code)
        assert r.json() == {"error": r.json()["error"]}
        assert "allow" in r.headers, path
        if len(allowed) == 1:  # several: see the test below
            assert {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"} == allowed, path


async def test_allow_lists_every_method_of_a_path_with_several(client: httpx.AsyncClient) -> None:
    for path, item in openapi_document()["paths"].items():
        allowed = {m.upper() for m in item if m in METHODS}
        if len(allowed) < 2:
            continue
        r = await client.request("PATCH", _concrete(path))
        assert r.status_code == 405
        assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}, (path, r.headers["allow"])
