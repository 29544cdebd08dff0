"""Header blocks: HPACK in (a request's head, read with the `hpack` library; which blocks leave the
decoding table alone) and out (fixed, never-indexed blocks for answers and statuses)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from modelfleet.server.h2grpc.wire import Call, H2ConnectionError, H2Error, Status

# -- HPACK output: fixed blocks, literal fields never indexed, so no dynamic table to keep -----------------


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name (RFC 7541 6.2.2), no Huffman."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


_STATUS_200 = b"\x88"  # static table entry 8
_GRPC_CONTENT_TYPE = b"\x0f\x10" + _hpack_int(16, 7, 0) + b"application/grpc"  # name: static entry 31
_RESPONSE_HEADERS = _STATUS_200 + _GRPC_CONTENT_TYPE + _literal(b"grpc-accept-encoding", b"identity")
_OK_TRAILERS = _literal(b"grpc-status", b"0")
_UNSAFE_MESSAGE_BYTES = re.compile(rb"[^\x20-\x24\x26-\x7e]")
MAX_STATUS_MESSAGE_BYTES = 4096
HEAD_CACHE_SIZE = 64  # distinct header blocks remembered per connection


def percent_encode(message: str) -> bytes:
    """grpc-message's encoding: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    raw = message.encode()[:MAX_STATUS_MESSAGE_BYTES]
    return _UNSAFE_MESSAGE_BYTES.sub(lambda m: b"%%%02X" % m.group()[0], raw)


def status_block(status: Status) -> bytes:
    block = _literal(b"grpc-status", str(int(status.code)).encode())
    if status.message:
        block += _literal(b"grpc-message", percent_encode(status.message))
    for name, value in status.trailers:
        block += _literal(name.encode(), value.encode())
    return block


# grpc-timeout: at most 8 digits and a unit (PROTOCOL-HTTP2.md)
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """Seconds in a `grpc-timeout` value; None when it is malformed."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and digits.isascii()) or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


@dataclass(frozen=True, slots=True)
class _Head:
    """A request's headers as the server needs them: a bare HTTP status to refuse it with (not
    gRPC), or its call and deadline."""

    refusal: bytes | None
    call: Call
    timeout_s: float | None


def _read_head(
    headers: list[tuple[str, str]], peer: str | None, hold: Callable[[], Callable[[], bool]] | None = None
) -> _Head:
    method = path = content_type = ""
    timeout_s: float | None = None
    metadata: list[tuple[str, str]] = []
    for name, value in headers:
        if name.startswith(":"):
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            timeout_s = parse_timeout(value)
        else:
            metadata.append((name, value))
    refusal = None
    if method != "POST":
        refusal = _status_field(405)
    elif not content_type.startswith("application/grpc"):
        refusal = _status_field(415)
    return _Head(refusal, Call(path, tuple(metadata), peer, hold), timeout_s)


def _table_neutral(block: bytes) -> bool:
    """True when an HPACK block (already decoded without error) leaves the dynamic table as it
    was: only indexed fields (RFC 7541 6.1) and literals not added to it (6.2.2, 6.2.3)."""
    pos, end = 0, len(block)
    while pos < end:
        byte = block[pos]
        if byte & 0x80:  # indexed field
            pos = _hpack_int_end(block, pos, 7)[1]
        elif byte & 0xE0 == 0:  # literal without indexing / never indexed
            index, pos = _hpack_int_end(block, pos, 4)
            if index == 0:  # a literal name
                length, pos = _hpack_int_end(block, pos, 7)
                pos += length
            length, pos = _hpack_int_end(block, pos, 7)
            pos += length
        else:  # added to the table, or a table size update
            return False
    return True


def _hpack_int_end(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at block[pos] with an N-bit prefix (RFC 7541 5.1), and where it ends."""
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value == limit:
        shift = 0
        while True:
            byte = block[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, pos


def _unpad(payload: bytes | memoryview) -> bytes | memoryview:
    if not payload or payload[0] >= len(payload):
        raise H2ConnectionError(H2Error.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _status_field(status: int) -> bytes:
    """`:status` as a literal with the static table's name (index 8), never indexed."""
    return b"\x08" + _hpack_int(3, 7, 0) + str(status).encode()
