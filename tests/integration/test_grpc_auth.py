"""Keys and tenants on the gRPC front, the same rules as tests/integration/test_auth.py over HTTP:
one test per refusal, each followed by a call that must still be served; keys never in an answer
or a log line. A client from a non-loopback address is real only where this host has one; the
decision for such peers is also unit-tested (tests/unit/server/test_grpc.py)."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from modelfleet.protocol.grpc import METHODS, method_path
from modelfleet.server.auth import key_digest
from tests.e2e.conftest import free_port
from tests.integration.test_auth import ADMIN, KEY_A, KEY_B, auth_settings
from tests.integration.test_grpc import ROW, Served, identity_request, serving
from tests.models import identity

Metadata = Sequence[tuple[str, str]]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


A, B, ROOT = bearer(KEY_A), bearer(KEY_B), bearer(ADMIN)


async def rpc(s: Served, method: str, metadata: Metadata = (), **fields: Any) -> Any:
    request, response = METHODS[method]
    call = s.stub.channel.unary_unary(
        method_path(method),
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return await call(request(**fields), metadata=metadata)


async def refused(
    s: Served, method: str, metadata: Metadata, code: grpc.StatusCode, message: str, **fields: Any
) -> str:
    """The call fails with `code` and `message`; the server still serves a legitimate call."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc(s, method, metadata, **fields)
    details = caught.value.details() or ""
    assert caught.value.code() == code, details
    assert message in details, details
    await assert_serves(s)
    return details


async def assert_serves(s: Served) -> None:
    answer = await rpc(s, "ModelInfer", A, **identity_request())
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], np.float32), ROW)
    assert (await rpc(s, "ServerReady")).ready


def grpc_auth_settings(repo: Path, tmp_path: Path, **extra: Any) -> Any:
    return auth_settings(repo, tmp_path, grpc_port=free_port(), max_body_bytes=1 << 20, **extra)


@pytest.fixture
async def served(repo: Path, tmp_path: Path) -> AsyncIterator[Served]:
    async with serving(grpc_auth_settings(repo, tmp_path)) as s:
        yield s


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
NEEDS_KEY = [
    ("ModelInfer", identity_request()),
    ("ModelMetadata", {"name": "identity"}),
    ("ModelConfig", {"name": "identity"}),
    ("ModelReady", {"name": "identity"}),
    ("ModelStatistics", {"name": "identity"}),
    ("ModelStatistics", {}),
    ("ServerMetadata", {}),
    ("RepositoryIndex", {}),
]


# -- inference keys ----------------------------------------------------------------------------------------


async def test_missing_key_is_unauthenticated(served: Served) -> None:
    for method, fields in NEEDS_KEY:
        await refused(served, method, (), UNAUTHENTICATED, "missing API key", **fields)
    assert (await rpc(served, "ServerLive")).live  # health needs no key
    assert (await rpc(served, "ServerReady")).ready


async def test_wrong_key_is_unauthenticated(served: Served) -> None:
    for metadata in (
        bearer(KEY_A + "x"),
        bearer(KEY_A[:-1]),
        (("x-api-key", key_digest(KEY_A)),),  # the stored digest is not a key
        (("authorization", f"Bearer {KEY_A}x"), ("x-api-key", KEY_A)),  # a wrong bearer is not excused
    ):
        for method, fields in NEEDS_KEY:
            await refused(served, method, metadata, UNAUTHENTICATED, "invalid API key", **fields)


async def test_x_api_key_metadata(served: Served) -> None:
    answer = await rpc(served, "ModelInfer", (("x-api-key", KEY_A),), **identity_request())
    assert answer.model_name == "identity"
    await assert_serves(served)


FOREIGN_CALLS = [
    ("ModelInfer", lambda m: identity_request(model_name=m)),
    ("ModelInfer", lambda m: identity_request(model_name=m, model_version="1")),
    ("ModelMetadata", lambda m: {"name": m}),
    ("ModelMetadata", lambda m: {"name": m, "version": "1"}),
    ("ModelConfig", lambda m: {"name": m}),
    ("ModelStatistics", lambda m: {"name": m}),
    ("ModelStatistics", lambda m: {"name": m, "version": "1"}),
]


@pytest.mark.parametrize(("method", "fields"), FOREIGN_CALLS)
async def test_another_tenants_model_answers_like_an_unknown_one(
    served: Served, method: str, fields: Any
) -> None:
    foreign = await refused(served, method, A, NOT_FOUND, "not found", **fields("auto"))
    unknown = await refused(served, method, A, NOT_FOUND, "not found", **fields("no-such"))
    assert foreign == unknown.replace("no-such", "auto")
    assert await rpc(served, method, B, **fields("auto"))  # its owner is served
    await assert_serves(served)


async def test_another_tenants_model_is_not_ready_like_an_unknown_one(served: Served) -> None:
    assert not (await rpc(served, "ModelReady", A, name="auto")).ready
    assert not (await rpc(served, "ModelReady", A, name="no-such")).ready
    assert (await rpc(served, "ModelReady", B, name="auto")).ready
    assert (await rpc(served, "ModelReady", A, name="identity")).ready
    await assert_serves(served)


async def test_index_and_statistics_list_only_the_tenants_models(served: Served) -> None:
    index = await rpc(served, "RepositoryIndex", A)
    assert {m.name for m in index.models} == {"identity", "versioned"}
    stats = await rpc(served, "ModelStatistics", A)
    assert {m.name for m in stats.model_stats} == {"identity", "versioned"}
    full = await rpc(served, "RepositoryIndex", ROOT)
    assert {"identity", "auto", "broken", "versioned"} <= {m.name for m in full.models}
    assert "auto" in {m.name for m in (await rpc(served, "ModelStatistics", ROOT)).model_stats}
    await assert_serves(served)


async def test_the_admin_key_reaches_every_model(served: Served) -> None:
    for name in ("identity", "auto"):
        assert (await rpc(served, "ModelInfer", ROOT, **identity_request(model_name=name))).model_name == name
        assert (await rpc(served, "ModelMetadata", ROOT, name=name)).name == name
    assert (await rpc(served, "ServerMetadata", ROOT)).name == "modelfleet"
    await assert_serves(served)


# -- control -----------------------------------------------------------------------------------------------


async def test_control_with_a_tenant_key_is_permission_denied(served: Served) -> None:
    for method in ("RepositoryModelLoad", "RepositoryModelUnload"):
        for name in ("identity", "auto"):  # its own model or not
            await refused(served, method, A, DENIED, "inference keys cannot control models", model_name=name)
    assert (await rpc(served, "ModelReady", A, name="identity")).ready  # nothing was unloaded


async def test_control_without_the_admin_key_is_unauthenticated_when_one_is_set(served: Served) -> None:
    """The test client is loopback; once an admin key is set, loopback is no admin."""
    for method in ("RepositoryModelLoad", "RepositoryModelUnload"):
        await refused(served, method, (), UNAUTHENTICATED, "needs the admin key", model_name="identity")


async def test_control_with_the_admin_key(served: Served) -> None:
    await rpc(served, "RepositoryModelUnload", ROOT, model_name="auto")
    await refused(served, "ModelMetadata", B, NOT_FOUND, "model 'auto' is not loaded", name="auto")
    await rpc(served, "RepositoryModelLoad", ROOT, model_name="auto")
    assert (await rpc(served, "ModelReady", B, name="auto")).ready
    await assert_serves(served)


@pytest.mark.parametrize("with_tenants", [True, False])
async def test_without_an_admin_key_control_from_loopback(
    repo: Path, tmp_path: Path, with_tenants: bool
) -> None:
    settings = grpc_auth_settings(repo, tmp_path, admin=False)
    if not with_tenants:
        settings = settings.model_copy(update={"auth_keys_file": None})
    async with serving(settings) as s:
        await rpc(s, "RepositoryModelUnload", model_name="auto")
        assert (await rpc(s, "RepositoryIndex", B if with_tenants else ())).models  # still answers
        await rpc(s, "RepositoryModelLoad", model_name="auto")
        if with_tenants:
            await refused(s, "RepositoryModelLoad", A, DENIED, "inference keys cannot", model_name="auto")
            await assert_serves(s)
        else:  # no keys at all: inference open
            assert (await rpc(s, "ModelInfer", **identity_request())).model_name == "identity"


async def test_loopback_control_off(repo: Path, tmp_path: Path) -> None:
    settings = grpc_auth_settings(repo, tmp_path, admin=False, loopback_control=False)
    async with serving(settings) as s:
        await refused(s, "RepositoryModelLoad", (), DENIED, "loopback", model_name="identity")


async def test_control_over_ipv6_loopback(repo: Path, tmp_path: Path) -> None:
    """`ipv6:%5B::1%5D:port` peers are loopback too (the peer parser's other format, for real)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    settings = grpc_auth_settings(repo, tmp_path, admin=False, host="::")  # dual-stack: the harness's
    try:  # IPv4 channel still connects (as ::ffff:127.0.0.1, loopback too)
        async with (
            serving(settings) as s,
            grpc.aio.insecure_channel(f"[::1]:{settings.grpc_port}") as channel,
        ):
            s.stub.channel = channel
            await rpc(s, "RepositoryModelLoad", model_name="identity")
            await assert_serves(s)
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1: {exc}")


def _own_address() -> str | None:
    """A non-loopback address of this host (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_control_from_a_non_loopback_peer_is_refused(repo: Path, tmp_path: Path) -> None:
    """A real client from this host's own non-loopback address, with no admin key set."""
    address = _own_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    settings = grpc_auth_settings(repo, tmp_path, admin=False, host="0.0.0.0")  # the harness uses loopback
    async with (
        serving(settings) as s,
        grpc.aio.insecure_channel(f"{address}:{settings.grpc_port}") as remote,
    ):
        s.stub.channel = remote
        await refused(s, "RepositoryModelUnload", (), DENIED, "only from loopback", model_name="identity")
        await refused(s, "RepositoryModelLoad", A, DENIED, "inference keys cannot", model_name="identity")
        assert (await rpc(s, "ModelReady", A, name="identity")).ready  # nothing was unloaded


async def test_only_control_rescans_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    identity(repo / "identity" / "1" / "model.onnx")
    async with serving(grpc_auth_settings(repo, tmp_path)) as s:
        identity(repo / "version-new" / "1" / "model.onnx")  # acme's pattern matches it
        assert {m.name for m in (await rpc(s, "RepositoryIndex", A)).models} == {"identity"}
        assert {m.name for m in (await rpc(s, "RepositoryIndex", ROOT)).models} == {"identity", "version-new"}
        assert {m.name for m in (await rpc(s, "RepositoryIndex", A)).models} == {"identity", "version-new"}
        await assert_serves(s)


# -- secrets -------------------------------------------------------------------------------------------------


async def test_keys_never_appear_in_answers_or_logs(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [KEY_A, KEY_B, ADMIN, "wrong-" + KEY_A]
    seen: list[str] = []
    async with serving(grpc_auth_settings(repo, tmp_path)) as s:
        for key in secrets:
            for metadata in (bearer(key), (("x-api-key", key),)):
                for method, fields in [
                    ("ModelInfer", identity_request()),
                    ("ModelInfer", identity_request(model_name="auto", inputs=[])),
                    ("ModelMetadata", {"name": "broken"}),
                    ("RepositoryModelLoad", {"model_name": "auto"}),
                    ("RepositoryIndex", {}),
                    ("ModelStatistics", {}),
                ]:
                    try:
                        seen.append(str(await rpc(s, method, metadata, **fields)))
                    except grpc.aio.AioRpcError as exc:
                        seen.append(f"{exc.details()} {exc.initial_metadata()} {exc.trailing_metadata()}")
        await assert_serves(s)
    text = "\n".join(seen) + caplog.text
    assert caplog.records
    for secret in secrets:
        assert secret not in text
        assert key_digest(secret) not in text
