"""The gRPC transport's one status table (every error of the tree maps to the intended code), the
peer-address parser, and the Guard's verdict for metadata and peers no in-process client can send
(a non-loopback address, odd peer formats)."""

from __future__ import annotations

import grpc
import pytest

from modelfleet import errors
from modelfleet.server.auth import Access, Guard, key_digest
from modelfleet.server.grpc import STATUS_CODES, admit, peer_host, status_code


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
    assert status_code(error.status) == code


def test_every_error_status_is_in_the_table() -> None:
    statuses = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ModelfleetError)
    }
    assert statuses <= STATUS_CODES.keys()
    assert status_code(501) == grpc.StatusCode.UNIMPLEMENTED
    assert status_code(418) == grpc.StatusCode.INTERNAL  # anything unforeseen


# -- peers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:50051", "127.0.0.1"),
        ("ipv4:127.8.9.10:1", "127.8.9.10"),
        ("ipv4:10.0.0.5:443", "10.0.0.5"),
        ("ipv6:%5B::1%5D:50051", "::1"),  # what grpcio 1.85 writes
        ("ipv6:[::1]:50051", "::1"),  # what older releases write
        ("ipv6:%5B::ffff:127.0.0.1%5D:7", "::ffff:127.0.0.1"),  # dual-stack listener, IPv4 client
        ("ipv6:%5Bfe80::1%25eth0%5D:7", "fe80::1%eth0"),  # zone id, percent-encoded
        ("ipv6:%5B2001:db8::1%5D:9", "2001:db8::1"),
    ],
)
def test_peer_host_reads_grpc_peer_strings(peer: str, host: str) -> None:
    assert peer_host(peer) == host


@pytest.mark.parametrize(
    "peer",
    [
        "unix:",
        "unix:/tmp/modelfleet.sock",
        "unix-abstract:x",
        "vsock:3:5000",
        "",
        "127.0.0.1:5000",  # no scheme
        "ipv4:127.0.0.1",  # no port
        "ipv4:127.0.0.1:",
        "ipv4:127.0.0.1:x",
        "ipv4:localhost:5000",  # a name, not an address: never trusted as loopback
        "ipv4:::1:5000",  # an IPv6 address under the IPv4 scheme
        "ipv6:::1:5000",  # no brackets
        "ipv6:%5B::1:5000",
        "ipv6:%5B127.0.0.1%5D:5000",  # an IPv4 address under the IPv6 scheme
        "ipv6:%5Bnot-an-address%5D:1",
        "IPV4:127.0.0.1:1",
    ],
)
def test_unknown_peer_formats_are_no_address(peer: str) -> None:
    """Fail safe: what does not parse is not loopback, so it never gets loopback's control."""
    assert peer_host(peer) is None


KEY_A, ADMIN = "acme-0123456789abcdef", "admin-key-0123456789"
TENANTS = {"acme": ([key_digest(KEY_A)], ["acme-*"])}
LOCAL, REMOTE = "ipv4:127.0.0.1:5000", "ipv4:10.0.0.5:5000"


def test_control_from_a_remote_peer_without_an_admin_key_is_refused() -> None:
    for tenants in (TENANTS, {}):
        g = Guard(tenants)
        for peer in (REMOTE, "ipv6:%5B2001:db8::1%5D:1", "unix:", "vsock:3:1", "garbage"):
            with pytest.raises(errors.Forbidden, match="only from loopback clients"):
                admit(g, Access.CONTROL, (), peer, "acme-x")
        for peer in (LOCAL, "ipv6:%5B::1%5D:1", "ipv6:[::ffff:127.0.0.1]:1"):
            assert admit(g, Access.CONTROL, (), peer, "acme-x").control
    with pytest.raises(errors.Forbidden, match="loopback"):
        admit(Guard(TENANTS, loopback_control=False), Access.CONTROL, (), LOCAL)


def test_control_with_the_admin_key_from_anywhere_and_never_with_a_tenant_key() -> None:
    g = Guard(TENANTS, key_digest(ADMIN))
    for peer in (REMOTE, LOCAL, "unix:"):
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
