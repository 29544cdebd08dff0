"""Small ASGI pieces every HTTP front shares (V2 REST, SageMaker): the Guard's verdict for a
request, the tenant's quota, the body reader with its limits and budget, JSON answers and the
error envelope. No routes here."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from modelfleet.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelfleetError,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from modelfleet.protocol.documents import error_json
from modelfleet.protocol.rest import loads
from modelfleet.server.auth import Access, Guard, Principal, presented_key
from modelfleet.server.http1 import HOLD

JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected before its body arrived; nobody to answer."""


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def admit(
    guard: Guard,
    access: Access,
    scope: Scope,
    headers: dict[bytes, bytes],
    name: str | None = None,
    version: str | None = None,
) -> Principal:
    """The Guard's verdict for this request: the key from its headers, the TCP peer's address
    (never X-Forwarded-For: uvicorn runs with proxy_headers=False)."""
    key = presented_key(headers.get(b"authorization"), headers.get(b"x-api-key"))
    client = scope.get("client")
    return guard.admit(access, key, client[0] if client else None, name, version)


def hold_of(scope: Scope) -> Callable[[], Callable[[], bool]] | None:
    """The connection's hold (server/http1.py), for a tenant past its quota; None when the server
    under the app is not ours (an in-process test client)."""
    hold: Callable[[], Callable[[], bool]] | None = scope.get("extensions", {}).get(HOLD)
    return hold


class BodyBudget:
    """Request bytes held at once by every request together (`max_body_bytes_in_flight`): each
    request takes its share as its body arrives and releases it when it is answered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def share(self) -> Share:
        return Share(self)


class Share:
    """One request's part of a BodyBudget; `release()` when the request is answered."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.nbytes = 0

    def take(self, n: int) -> None:
        budget = self._budget
        if budget.used + n > budget.limit:
            raise Overloaded(
                f"the server is receiving {budget.used} bytes of requests, its limit "
                f"(max_body_bytes_in_flight) is {budget.limit}; retry"
            )
        budget.used += n
        self.nbytes += n

    def release(self) -> None:
        self._budget.used -= self.nbytes
        self.nbytes = 0


async def read_body(
    receive: Receive,
    headers: dict[bytes, bytes],
    limit: int,
    *,
    timeout_s: float | None = None,
    share: Share | None = None,
) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit`, with 408 when
    it takes longer than `timeout_s` to arrive, and with 429 when `share` cannot take its bytes."""
    declared = headers.get(b"content-length")
    reserved = 0
    if declared is not None and declared.isdigit():
        reserved = int(declared)
        if reserved > limit:
            raise _too_large(limit, "")
        if share is not None:
            share.take(reserved)  # before any of it is held
    chunks: list[bytes] = []
    message = await receive()
    total = _add_chunk(message, chunks, 0, limit)
    if message.get("more_body", False):
        try:
            async with asyncio.timeout(timeout_s):
                while message.get("more_body", False):
                    message = await receive()
                    total = _add_chunk(message, chunks, total, limit)
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
    if share is not None and total > reserved:
        share.take(total - reserved)  # no (or a wrong) Content-Length
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
        body = _decompress(body, encoding.strip().lower(), limit)
        if share is not None:
            share.take(len(body))
    return body


def _add_chunk(message: Message, chunks: list[bytes], total: int, limit: int) -> int:
    if message["type"] == "http.disconnect":
        raise ClientGone
    chunk = message.get("body", b"")
    if chunk:
        total += len(chunk)
        if total > limit:
            raise _too_large(limit, "")
        chunks.append(chunk)
    return total


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body{what} is larger than max_body_bytes ({limit} bytes); "
        "raise it with MODELFLEET_MAX_BODY_BYTES or --max-body-bytes"
    )


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        raise BadRequest(f"unsupported Content-Encoding '{encoding.decode('latin-1')}'; use gzip or deflate")
    inflater = zlib.decompressobj(47)  # 32 + 15: zlib or gzip header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequest(f"request body is not valid {encoding.decode()} data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit, " after decompression")
    if not inflater.eof:
        raise BadRequest(f"{encoding.decode()} request body is truncated")
    return out


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(exc: ModelfleetError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    extra: list[tuple[bytes, bytes]] = []
    if isinstance(exc, Overloaded):
        extra.append((b"retry-after", str(exc.retry_after_s).encode()))
    if isinstance(exc, (PayloadTooLarge, RequestTimeout)):
        extra.append((b"connection", b"close"))  # the rest of the body is not worth reading
    if isinstance(exc, Unauthorized):
        extra.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, MethodNotAllowed):
        extra.append((b"allow", ", ".join(exc.allow).encode()))
    return error_json(exc.message), extra


async def send_error(send: Send, exc: ModelfleetError) -> None:
    body, extra = error_body(exc)
    await send_json(send, exc.status, body, extra)


async def watch_disconnect(receive: Receive, task: asyncio.Task[Any]) -> None:
    """Cancel the request's task if its client goes away while it waits."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel("client disconnected")
            return


def json_object(body: bytes, max_depth: int) -> dict[str, Any]:
    """A control request's body as a JSON object nested at most `max_depth` levels, else 400
    saying what is wrong."""
    doc = loads(body, max_depth)
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc
