"""Keys and tenants on the SageMaker contract, the same rules as tests/integration/test_auth.py on
the V2 routes: one test per refusal, each followed by a request that must still be served; keys
never in a response or a log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.server.auth import key_digest
from tests.integration.test_auth import ADMIN, KEY_A, KEY_B, ROW, assert_error, auth_settings, bearer, clients

TARGET = "X-Amzn-SageMaker-Target-Model"
ROWS = {"instances": [ROW]}
Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]


@pytest.fixture
async def app(repo: Path, tmp_path: Path) -> AsyncIterator[Clients]:
    async with clients(auth_settings(repo, tmp_path, sagemaker=True)) as pair:
        yield pair


async def assert_serves(client: httpx.AsyncClient) -> None:
    """A legitimate request is still answered correctly."""
    r = await client.post("/invocations", json=ROWS, headers={TARGET: "identity", **bearer(KEY_A)})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [ROW]}
    assert (await client.get("/ping")).status_code == 200


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """`path` with a target model after '@': '/invocations@auto' sends the header."""
    path, _, target = path.partition("@")
    if target:
        headers = {TARGET: target, **headers}
    body: Any = ROWS if "invo" in path else {"model_name": "auto"} if method == "POST" else None
    return await client.request(method, path, json=body, headers=headers)


NEEDS_KEY = [
    ("POST", "/invocations@identity"),
    ("POST", "/invocations"),  # no target: nothing about the repository is told first
    ("POST", "/models/identity/invoke"),
    ("GET", "/models"),
    ("GET", "/models/identity"),
]
CONTROL = [("POST", "/models"), ("DELETE", "/models/auto")]


# -- inference keys ----------------------------------------------------------------------------------------


async def test_missing_key_is_401_and_ping_needs_none(app: Clients) -> None:
    _, remote = app
    for method, path in NEEDS_KEY:
        r = await call(remote, method, path, {})
        assert_error(r, 401, "missing API key")
        assert r.headers["www-authenticate"] == "Bearer"
    assert (await remote.get("/ping")).json() == {"ready": True}
    await assert_serves(remote)


async def test_wrong_key_is_401(app: Clients) -> None:
    local, remote = app
    for client in (local, remote):  # loopback is no excuse for a wrong key
        for headers in (bearer(KEY_A + "x"), {"X-Api-Key": KEY_A[:-1]}, {"X-Api-Key": key_digest(KEY_A)}):
            for method, path in NEEDS_KEY + CONTROL:
                r = await call(client, method, path, headers)
                assert_error(r, 401, "invalid API key")
    await assert_serves(remote)


async def test_x_api_key_header(app: Clients) -> None:
    _, remote = app
    r = await call(remote, "POST", "/models/identity/invoke", {"X-Api-Key": KEY_A})
    assert r.json() == {"predictions": [ROW]}
    await assert_serves(remote)


FOREIGN = [
    ("POST", "/invocations@{m}"),
    ("POST", "/invocations@{m}.tar.gz"),
    ("POST", "/models/{m}/invoke"),
    ("GET", "/models/{m}"),
]


@pytest.mark.parametrize(("method", "path"), FOREIGN)
async def test_another_tenants_model_is_404_like_an_unknown_one(app: Clients, method: str, path: str) -> None:
    _, remote = app
    foreign = await call(remote, method, path.format(m="auto"), bearer(KEY_A))
    unknown = await call(remote, method, path.format(m="no-such"), bearer(KEY_A))
    assert_error(foreign, 404, "not found")
    assert unknown.status_code == 404
    assert foreign.json()["error"] == unknown.json()["error"].replace("no-such", "auto")
    assert foreign.headers["content-type"] == unknown.headers["content-type"]
    owner = await call(remote, method, path.format(m="auto"), bearer(KEY_B))
    assert owner.status_code == 200, owner.text
    await assert_serves(remote)


async def test_the_model_list_shows_only_the_tenants_models(app: Clients) -> None:
    _, remote = app
    mine = (await remote.get("/models", headers=bearer(KEY_A))).json()
    assert {m["modelName"] for m in mine["models"]} == {"identity", "versioned"}
    paged = (await remote.get("/models?max_results=1", headers=bearer(KEY_A))).json()
    assert [m["modelName"] for m in paged["models"]] == ["identity"]
    rest = await remote.get(f"/models?next_page_token={paged['nextPageToken']}", headers=bearer(KEY_A))
    assert rest.json() == {"models": [{"modelName": "versioned", "modelUrl": mine["models"][1]["modelUrl"]}]}
    every = (await remote.get("/models", headers=bearer(ADMIN))).json()
    assert {"identity", "auto", "versioned"} <= {m["modelName"] for m in every["models"]}
    await assert_serves(remote)


async def test_without_a_target_the_tenant_counts_only_its_models(app: Clients) -> None:
    _, remote = app
    r = await remote.post("/invocations", json=ROWS, headers=bearer(KEY_A))
    assert_error(r, 400, "the repository has 2 models")  # acme's two, not the repository's
    await assert_serves(remote)


async def test_the_admin_key_reaches_every_model(app: Clients) -> None:
    _, remote = app
    for name in ("identity", "auto"):
        r = await call(remote, "POST", f"/invocations@{name}", bearer(ADMIN))
        assert r.json() == {"predictions": [ROW]}
        assert (await call(remote, "GET", f"/models/{name}", bearer(ADMIN))).status_code == 200
    await assert_serves(remote)


# -- control -----------------------------------------------------------------------------------------------


async def test_control_with_a_tenant_key_is_403(app: Clients) -> None:
    local, remote = app
    for client in (local, remote):
        for headers in (bearer(KEY_A), bearer(KEY_B)):  # the model's owner or not
            for method, path in CONTROL:
                r = await call(client, method, path, headers)
                assert_error(r, 403, "inference keys cannot control models")
    assert (await call(remote, "GET", "/models/auto", bearer(KEY_B))).status_code == 200  # still loaded
    await assert_serves(remote)


async def test_control_without_the_admin_key_is_401_when_one_is_set(app: Clients) -> None:
    local, remote = app
    for client in (local, remote):
        for method, path in CONTROL:
            r = await call(client, method, path, {})
            assert_error(r, 401, "needs the admin key")
            assert r.headers["www-authenticate"] == "Bearer"
    await assert_serves(remote)


async def test_control_with_the_admin_key(app: Clients) -> None:
    _, remote = app
    r = await call(remote, "DELETE", "/models/auto", bearer(ADMIN))
    assert r.json() == {"modelName": "auto"}
    assert (await call(remote, "GET", "/models/auto", bearer(KEY_B))).status_code == 404  # unloaded for real
    r = await call(remote, "POST", "/models", bearer(ADMIN))
    assert r.status_code == 200, r.text
    assert (await call(remote, "GET", "/models/auto", bearer(KEY_B))).status_code == 200
    await assert_serves(remote)


@pytest.mark.parametrize("with_tenants", [True, False])
async def test_without_an_admin_key_control_only_from_loopback(
    repo: Path, tmp_path: Path, with_tenants: bool
) -> None:
    settings = auth_settings(repo, tmp_path, admin=False, sagemaker=True)
    if not with_tenants:
        settings = settings.model_copy(update={"auth_keys_file": None})
    key = bearer(KEY_A) if with_tenants else {}
    async with clients(settings) as (local, remote):
        for method, path in CONTROL:
            assert_error(await call(remote, method, path, {}), 403, "only from loopback clients")
            assert_error(await call(remote, method, path, key), 403, "")
        assert (await call(local, "DELETE", "/models/auto", {})).status_code == 200
        assert (await call(local, "POST", "/models", {})).status_code == 200
        r = await call(remote, "POST", "/invocations@identity", key)
        assert r.json() == {"predictions": [ROW]}


async def test_loopback_control_off(repo: Path, tmp_path: Path) -> None:
    settings = auth_settings(repo, tmp_path, admin=False, loopback_control=False, sagemaker=True)
    async with clients(settings) as (local, _):
        assert_error(await call(local, "DELETE", "/models/auto", {}), 403, "loopback")
        await assert_serves(local)


# -- secrets -------------------------------------------------------------------------------------------------


async def test_keys_never_appear_in_responses_or_logs(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [KEY_A, KEY_B, ADMIN, "wrong-" + KEY_A]
    seen: list[str] = []
    async with clients(auth_settings(repo, tmp_path, sagemaker=True)) as (local, remote):
        for client in (local, remote):
            for key in secrets:
                for headers in (bearer(key), {"X-Api-Key": key}):
                    for method, path in NEEDS_KEY + CONTROL + [("POST", "/invocations@broken")]:
                        r = await call(client, method, path, headers)
                        seen.append(r.text)
                        seen.extend(f"{k}: {v}" for k, v in r.headers.items())
        await assert_serves(remote)
    text = "\n".join(seen) + caplog.text
    assert caplog.records
    for secret in secrets:
        assert secret not in text
        assert key_digest(secret) not in text
