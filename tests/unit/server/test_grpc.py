"""The gRPC transport's one status table (every error of the tree maps to the intended code, the
same as grpcio's numbering), and the Guard's verdict for metadata and peers no in-process client
can send (a non-loopback address, a socket with no address)."""

from __future__ import annotations

import grpc
import pytest

from modelfleet import errors
from modelfleet.server.auth import Access, Guard, key_digest
from modelfleet.server.grpc import STATUS_CODES, admit, status, status_code
from modelfleet.server.h2grpc import StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden, grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.NotAcceptable, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UnsupportedMediaType, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.MethodNotAllowed, grpc.StatusCode.UNIMPLEMENTED),
        (errors.Conflict, grpc.StatusCode.ALREADY_EXISTS),
        (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.InferenceFailed, grpc.StatusCode.INTERNAL),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.InsufficientMemory, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ModelfleetError, grpc.StatusCode.INTERNAL),
    ],
)
def test_error_codes(error: type[errors.ModelfleetError], code: grpc.StatusCode) -> None:
    ours = status_code(error.status)
    assert (ours.value, ours.name) == (code.value[0], code.name)  # grpcio's numbers and names


def test_every_error_status_is_in_the_table() -> None:
    statuses = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ModelfleetError)
    }
    assert statuses <= STATUS_CODES.keys()
    assert status_code(501) == StatusCode.UNIMPLEMENTED
    assert status_code(418) == StatusCode.INTERNAL  # anything unforeseen


def test_every_grpc_code_has_grpcio_s_number() -> None:
    assert {code.name: code.value for code in StatusCode} == {
        code.name: code.value[0] for code in grpc.StatusCode
    }


def test_status_carries_the_message_and_retry_after() -> None:
    refused = status(errors.Overloaded("queue full", retry_after_s=2))
    assert (refused.code, refused.message) == (StatusCode.RESOURCE_EXHAUSTED, "queue full")
    assert refused.trailers == (("retry-after", "2"),)
    assert status(errors.NotFound("model 'x' not found")).trailers == ()


KEY_A, ADMIN = "acme-0123456789abcdef", "admin-key-0123456789"
TENANTS = {"acme": ([key_digest(KEY_A)], ["acme-*"])}
LOCAL, REMOTE = "127.0.0.1", "10.0.0.5"


def test_control_from_a_remote_peer_without_an_admin_key_is_refused() -> None:
    for tenants in (TENANTS, {}):
        g = Guard(tenants)
        for peer in (REMOTE, "2001:db8::1", None, "garbage"):
            with pytest.raises(errors.Forbidden, match="only from loopback clients"):
                admit(g, Access.CONTROL, (), peer, "acme-x")
        for peer in (LOCAL, "::1", "::ffff:127.0.0.1", "127.8.9.10"):
            assert admit(g, Access.CONTROL, (), peer, "acme-x").control
    with pytest.raises(errors.Forbidden, match="loopback"):
        admit(Guard(TENANTS, loopback_control=False), Access.CONTROL, (), LOCAL)


def test_control_with_the_admin_key_from_anywhere_and_never_with_a_tenant_key() -> None:
    g = Guard(TENANTS, key_digest(ADMIN))
    for peer in (REMOTE, LOCAL, None):
        assert admit(g, Access.CONTROL, [("authorization", f"Bearer {ADMIN}")], peer).control
        assert admit(g, Access.CONTROL, [("x-api-key", ADMIN.encode())], peer).control
        with pytest.raises(errors.Forbidden, match="inference keys cannot control"):
            admit(g, Access.CONTROL, [("authorization", f"Bearer {KEY_A}")], peer)
        with pytest.raises(errors.Unauthorized, match="needs the admin key"):
            admit(g, Access.CONTROL, [], peer)  # loopback is no admin once an admin key is set


def test_keys_come_from_authorization_then_x_api_key() -> None:
    g = Guard(TENANTS)
    bearer = ("authorization", f"Bearer {KEY_A}")
    assert admit(g, Access.MODEL, [("user-agent", "x"), bearer], REMOTE, "acme-1").name == "acme"
    assert admit(g, Access.MODEL, [("x-api-key", KEY_A)], REMOTE, "acme-1").name == "acme"
    # a proxy's Basic credentials are not ours: the x-api-key decides
    assert admit(g, Access.MODEL, [("authorization", "Basic abc"), ("x-api-key", KEY_A)], REMOTE, "acme-1")
    # the first authorization entry counts; a second cannot replace a wrong one
    with pytest.raises(errors.Unauthorized, match="invalid API key"):
        admit(g, Access.MODEL, [("authorization", "Bearer wrong"), bearer], REMOTE, "acme-1")
    with pytest.raises(errors.Unauthorized, match="missing API key"):
        admit(g, Access.MODEL, None, REMOTE, "acme-1")
    with pytest.raises(errors.NotFound, match="^model 'beta-1' not found$"):
        admit(g, Access.MODEL, [bearer], REMOTE, "beta-1")
