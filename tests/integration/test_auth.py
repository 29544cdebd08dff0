"""Keys and tenants on the real app: one test per refusal, each followed by a request that must
still be served; keys never in a response or a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.server.app import build_app
from modelfleet.server.auth import AuthConfigError, key_digest
from tests.integration.conftest import client_for
from tests.models import identity

KEY_A = "acme-key-0123456789abcdef"
KEY_B = "beta-key-fedcba9876543210"
ADMIN = "admin-key-0123456789abcdef"
ROW = [i / 16 for i in range(16)]
INFER = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
# acme: identity and the two-version model; beta: every other model of the standard repository
TENANTS = {
    "acme": {"keys": [key_digest(KEY_A)], "models": ["identity", "version*"]},
    "beta": {"keys": [key_digest(KEY_B)], "models": ["auto", "add_*", "strings", "half", "fixed"]},
}
REMOTE = ("10.0.0.5", 1234)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def auth_settings(repo: Path, tmp_path: Path, admin: bool = True, **extra: Any) -> ServerSettings:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"tenants": TENANTS}))
    return ServerSettings(
        repository=repo,
        intra_op_threads=1,
        load_concurrency=2,
        startup_load=StartupLoad.ALL,
        auth_keys_file=keys,
        admin_key=ADMIN if admin else None,
        **extra,
    )


class clients:
    """`async with clients(settings) as (local, remote)`: one app, a loopback and a remote client."""

    def __init__(self, settings: ServerSettings) -> None:
        self.ctx = client_for(settings)

    async def __aenter__(self) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        local = await self.ctx.__aenter__()
        transport = httpx.ASGITransport(app=self.ctx.app, client=REMOTE)
        self.remote = httpx.AsyncClient(transport=transport, base_url="http://modelfleet")
        return local, self.remote

    async def __aexit__(self, *exc: object) -> None:
        await self.remote.aclose()
        await self.ctx.__aexit__(*exc)


@pytest.fixture
async def app(repo: Path, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with clients(auth_settings(repo, tmp_path)) as pair:
        yield pair


async def assert_serves(client: httpx.AsyncClient) -> None:
    """A legitimate request is still answered correctly."""
    r = await client.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ROW
    assert (await client.get("/v2/health/ready")).status_code == 200


def assert_error(r: httpx.Response, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"error"}
    assert message in r.json()["error"], r.json()


# -- inference keys ----------------------------------------------------------------------------------------


async def test_missing_key_is_401_with_www_authenticate(app: tuple[httpx.AsyncClient, ...]) -> None:
    _, remote = app
    for r in [
        await remote.post("/v2/models/identity/infer", json=INFER),
        await remote.get("/v2/models/identity"),
        await remote.get("/v2"),
        await remote.post("/v2/repository/index"),
    ]:
        assert_error(r, 401, "missing API key")
        assert r.headers["www-authenticate"] == "Bearer"
    await assert_serves(remote)


async def test_wrong_key_is_401(app: tuple[httpx.AsyncClient, ...]) -> None:
    local, remote = app
    for client in (local, remote):  # loopback is no excuse for a wrong key
        for headers in (
            bearer(KEY_A + "x"),
            bearer(KEY_A[:-1]),
            {"X-Api-Key": key_digest(KEY_A)},  # the stored digest is not a key
            {"Authorization": b"Bearer \xff\xfe\x80"},  # not text: hashed and refused like any other
        ):
            r = await client.post("/v2/models/identity/infer", json=INFER, headers=headers)
            assert_error(r, 401, "invalid API key")
            assert r.headers["www-authenticate"] == "Bearer"
    await assert_serves(remote)


async def test_x_api_key_header_and_health_without_key(app: tuple[httpx.AsyncClient, ...]) -> None:
    _, remote = app
    r = await remote.post("/v2/models/identity/infer", json=INFER, headers={"X-Api-Key": KEY_A})
    assert r.status_code == 200, r.text
    assert (await remote.get("/v2/health/live")).json() == {"live": True}
    assert (await remote.get("/v2/health/ready")).json() == {"ready": True}
    await assert_serves(remote)


FOREIGN_CALLS = [
    ("POST", "/v2/models/{m}/infer"),
    ("POST", "/v2/models/{m}/versions/1/infer"),
    ("GET", "/v2/models/{m}"),
    ("GET", "/v2/models/{m}/versions/1"),
    ("GET", "/v2/models/{m}/ready"),
    ("GET", "/v2/models/{m}/config"),
    ("GET", "/v2/models/{m}/stats"),
    ("GET", "/v2/models/{m}/versions/1/stats"),
]


@pytest.mark.parametrize(("method", "path"), FOREIGN_CALLS)
async def test_another_tenants_model_is_404_like_an_unknown_one(
    app: tuple[httpx.AsyncClient, ...], method: str, path: str
) -> None:
    _, remote = app
    kwargs: dict[str, Any] = {"json": INFER} if method == "POST" else {}
    foreign = await remote.request(method, path.format(m="auto"), headers=bearer(KEY_A), **kwargs)
    unknown = await remote.request(method, path.format(m="no-such"), headers=bearer(KEY_A), **kwargs)
    assert_error(foreign, 404, "not found")
    assert unknown.status_code == 404
    assert foreign.json()["error"] == unknown.json()["error"].replace("no-such", "auto")
    assert foreign.headers["content-type"] == unknown.headers["content-type"]
    owner = await remote.request(method, path.format(m="auto"), headers=bearer(KEY_B), **kwargs)
    assert owner.status_code == 200, owner.text
    await assert_serves(remote)


async def test_index_and_statistics_list_only_the_tenants_models(app: tuple[httpx.AsyncClient, ...]) -> None:
    _, remote = app
    index = (await remote.post("/v2/repository/index", headers=bearer(KEY_A))).json()
    assert {e["name"] for e in index} == {"identity", "versioned"}
    stats = (await remote.get("/v2/models/stats", headers=bearer(KEY_A))).json()
    assert {e["name"] for e in stats["model_stats"]} == {"identity", "versioned"}
    assert "memory" not in stats  # server-wide totals count the other tenants' models
    full = (await remote.post("/v2/repository/index", headers=bearer(ADMIN))).json()
    assert {"identity", "auto", "broken", "versioned"} <= {e["name"] for e in full}
    assert "memory" in (await remote.get("/v2/models/stats", headers=bearer(ADMIN))).json()
    await assert_serves(remote)


async def test_the_admin_key_reaches_every_model(app: tuple[httpx.AsyncClient, ...]) -> None:
    _, remote = app
    for name in ("identity", "auto"):
        r = await remote.post(f"/v2/models/{name}/infer", json=INFER, headers=bearer(ADMIN))
        assert r.status_code == 200, r.text
    await assert_serves(remote)


# -- control -----------------------------------------------------------------------------------------------


async def test_control_with_a_tenant_key_is_403(app: tuple[httpx.AsyncClient, ...]) -> None:
    local, remote = app
    for client in (local, remote):
        for action in ("load", "unload"):
            r = await client.post(f"/v2/repository/models/identity/{action}", headers=bearer(KEY_A))
            assert_error(r, 403, "inference keys cannot control models")
        assert_error(await client.get("/metrics", headers=bearer(KEY_A)), 403, "admin key")
    await assert_serves(remote)


async def test_control_without_the_admin_key_is_401_when_one_is_set(
    app: tuple[httpx.AsyncClient, ...],
) -> None:
    local, remote = app
    for client in (local, remote):
        r = await client.post("/v2/repository/models/identity/unload")
        assert_error(r, 401, "needs the admin key")
        assert r.headers["www-authenticate"] == "Bearer"
    await assert_serves(remote)


async def test_control_with_the_admin_key(app: tuple[httpx.AsyncClient, ...]) -> None:
    _, remote = app
    assert (await remote.post("/v2/repository/models/auto/unload", headers=bearer(ADMIN))).status_code == 200
    r = await remote.get("/v2/models/auto", headers=bearer(KEY_B))
    assert r.status_code == 404  # unloaded for real
    assert (await remote.post("/v2/repository/models/auto/load", headers=bearer(ADMIN))).status_code == 200
    assert (await remote.get("/v2/models/auto", headers=bearer(KEY_B))).status_code == 200
    assert (await remote.get("/metrics", headers=bearer(ADMIN))).status_code == 200
    await assert_serves(remote)


@pytest.mark.parametrize("with_tenants", [True, False])
async def test_without_an_admin_key_control_only_from_loopback(
    repo: Path, tmp_path: Path, with_tenants: bool
) -> None:
    settings = auth_settings(repo, tmp_path, admin=False)
    if not with_tenants:
        settings = ServerSettings(repository=repo, intra_op_threads=1, startup_load=StartupLoad.ALL)
    key = bearer(KEY_A) if with_tenants else {}
    async with clients(settings) as (local, remote):
        r = await remote.post("/v2/repository/models/identity/load")
        assert_error(r, 403, "only from loopback clients")
        assert (await local.post("/v2/repository/models/identity/load")).status_code == 200
        if with_tenants:  # so are metrics (their labels name every tenant's models)
            assert_error(await remote.get("/metrics"), 403, "only from loopback clients")
            assert (await local.get("/metrics")).status_code == 200
        else:
            assert (await remote.get("/metrics")).status_code == 200
        r = await remote.post("/v2/models/identity/infer", json=INFER, headers=key)
        assert r.status_code == 200, r.text


async def test_loopback_control_off(repo: Path, tmp_path: Path) -> None:
    async with clients(auth_settings(repo, tmp_path, admin=False, loopback_control=False)) as (local, _):
        assert_error(await local.post("/v2/repository/models/identity/load"), 403, "loopback")
        await assert_serves(local)


async def test_only_control_rescans_the_repository(tmp_path: Path) -> None:
    """The index is a view for tenants; looking for new models in the repository is control."""
    repo = tmp_path / "repo"
    identity(repo / "identity" / "1" / "model.onnx")
    async with clients(auth_settings(repo, tmp_path)) as (_, remote):
        identity(repo / "version-new" / "1" / "model.onnx")  # acme's pattern matches it
        tenant_view = (await remote.post("/v2/repository/index", headers=bearer(KEY_A))).json()
        assert {e["name"] for e in tenant_view} == {"identity"}
        admin_view = (await remote.post("/v2/repository/index", headers=bearer(ADMIN))).json()
        assert {e["name"] for e in admin_view} == {"identity", "version-new"}
        tenant_view = (await remote.post("/v2/repository/index", headers=bearer(KEY_A))).json()
        assert {e["name"] for e in tenant_view} == {"identity", "version-new"}
        await assert_serves(remote)


# -- secrets -------------------------------------------------------------------------------------------------


async def test_keys_never_appear_in_responses_or_logs(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [KEY_A, KEY_B, ADMIN, "wrong-" + KEY_A]
    seen: list[str] = []
    async with clients(auth_settings(repo, tmp_path)) as (local, remote):
        for client in (local, remote):
            for key in secrets:
                for headers in (bearer(key), {"X-Api-Key": key}):
                    for r in [
                        await client.post("/v2/models/identity/infer", json=INFER, headers=headers),
                        await client.post("/v2/models/auto/infer", content=b"{bad json", headers=headers),
                        await client.get("/v2/models/broken", headers=headers),
                        await client.post("/v2/repository/models/auto/load", headers=headers),
                        await client.post("/v2/repository/index", headers=headers),
                        await client.get("/v2/models/stats", headers=headers),
                        await client.get("/metrics", headers=headers),
                    ]:
                        seen.append(r.text)
                        seen.extend(f"{k}: {v}" for k, v in r.headers.items())
        await assert_serves(remote)
    text = "\n".join(seen) + caplog.text
    assert caplog.records  # the server did log (loads, failures), so the check means something
    for secret in secrets:
        assert secret not in text
        assert key_digest(secret) not in text


def test_the_server_refuses_to_start_with_a_key_instead_of_its_digest(repo: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"tenants:\n  acme:\n    keys: [{KEY_A}]\n    models: [identity]\n")
    with pytest.raises(AuthConfigError, match="not a SHA-256 hex digest") as exc_info:
        build_app(ServerSettings(repository=repo, auth_keys_file=keys))
    assert KEY_A not in str(exc_info.value)
