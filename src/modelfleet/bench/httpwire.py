"""Just enough HTTP/1.1 for a load generator: pre-built request bytes and response framing.

`ResponseParser` finds where each response ends (Content-Length, chunked, or connection close)
without buffering bodies it is not asked to keep, so a response costs a few slices and finds.
`SetupConnection` is a slow, simple keep-alive client for the requests made before a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from urllib.parse import quote

from modelfleet.bench.spec import SAGEMAKER_TARGET_HEADER, Protocol, Target

MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024

# called with (status, keep_alive, body or None when bodies are not kept)
OnResponse = Callable[[int, bool, bytes | None], None]


class HTTPProtocolError(Exception):
    """The peer sent something that is not a well-formed HTTP/1.x response."""


def model_path(target: Target, model: str, suffix: str = "") -> str:
    return f"{target.base_path}/v2/models/{quote(model, safe='')}{suffix}"


def infer_route(target: Target, model: str) -> tuple[str, list[tuple[str, str]]]:
    """Path and extra headers of an inference request: V2's /infer, or SageMaker's /invocations
    naming the model in its target-model header."""
    if target.protocol is Protocol.SAGEMAKER:
        return f"{target.base_path}/invocations", [(SAGEMAKER_TARGET_HEADER, model)]
    return model_path(target, model, "/infer"), []


def auth_headers(api_key: str | None) -> list[tuple[str, str]]:
    """The header a modelfleet server reads a key from (server/auth.py), or none."""
    return [] if api_key is None else [("Authorization", f"Bearer {api_key}")]


def request_head(
    method: str,
    path: str,
    host: str,
    body_length: int | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The request line and headers, ending with the blank line; the body goes after it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    if body_length is not None:
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _value(head: bytes, start: int) -> bytes:
    """The header value starting at `start` in a head block, up to its line end."""
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


# parser states; module constants because the hot path reads them per response
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE = range(7)


class ResponseParser:
    """Incremental response framing: `feed` bytes as they come, `on_response` fires per response."""

    __slots__ = (
        "_keep_alive",
        "_keep_body",
        "_on_response",
        "_parts",
        "_pending",
        "_remaining",
        "_state",
        "_status",
    )

    def __init__(self, on_response: OnResponse, keep_body: bool = False) -> None:
        self._on_response = on_response
        self._keep_body = keep_body
        self._pending = b""  # a partial head or chunk line carried to the next feed
        self._parts: list[bytes] = []
        self._state = _HEAD
        self._remaining = 0
        self._status = 0
        self._keep_alive = True

    @property
    def in_progress(self) -> bool:
        """Whether part of a response has arrived but not all of it."""
        return self._state != _HEAD or bool(self._pending)

    def feed(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _HEAD:
                pos = self._head(data, pos)
            elif state in (_BODY, _CHUNK_DATA):
                take = min(self._remaining, end - pos)
                if self._keep_body:
                    self._parts.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    if state == _BODY:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
            elif state == _UNTIL_CLOSE:
                if self._keep_body:
                    self._parts.append(data[pos:])
                pos = end
            else:
                pos = self._line(data, pos)
            if pos < 0:
                return

    def feed_eof(self) -> None:
        """The peer closed: completes a response delimited by the close, else raises if one is cut."""
        if self._state == _UNTIL_CLOSE:
            self._complete()
        elif self.in_progress:
            raise HTTPProtocolError("connection closed in the middle of a response")

    def _head(self, data: bytes, pos: int) -> int:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if len(data) - pos > MAX_HEAD_BYTES:
                raise HTTPProtocolError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            self._pending = data[pos:]
            return -1
        head = data[pos:end].lower()
        try:
            if head[:7] != b"http/1." or head[12:13] not in (b"", b" "):
                raise ValueError
            status = int(head[9:12])
        except ValueError:
            raise HTTPProtocolError(f"malformed status line {data[pos : pos + 40]!r}") from None
        body = end + 4
        if status < 200:  # 100 Continue and friends: another head follows
            return body
        self._status = status
        keep_alive = head[7:8] == b"1"  # HTTP/1.1 keeps the connection unless told otherwise
        at = head.find(b"\r\nconnection:")
        if at >= 0:
            value = _value(head, at + 13)
            keep_alive = b"close" not in value and (keep_alive or b"keep-alive" in value)
        self._keep_alive = keep_alive
        if status == 204 or status == 304:
            self._complete()
            return body
        at = head.find(b"\r\ntransfer-encoding:")
        if at >= 0 and b"chunked" in _value(head, at + 20):
            self._state = _CHUNK_SIZE
            return body
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
            return body
        length = _value(head, at + 17)
        try:
            self._remaining = int(length)
        except ValueError:
            raise HTTPProtocolError(f"malformed Content-Length {length!r}") from None
        if self._remaining < 0:
            raise HTTPProtocolError(f"negative Content-Length {length!r}")
        self._state = _BODY
        if not self._remaining:
            self._complete()
        return body

    def _line(self, data: bytes, pos: int) -> int:
        """One CRLF-terminated line of chunked framing: a size, a chunk's end, or a trailer."""
        end = data.find(b"\r\n", pos)
        if end < 0:
            if len(data) - pos > MAX_LINE_BYTES:
                raise HTTPProtocolError(f"chunk framing line longer than {MAX_LINE_BYTES} bytes")
            self._pending = data[pos:]
            return -1
        line = data[pos:end]
        state = self._state
        if state == _CHUNK_SIZE:
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise HTTPProtocolError(f"malformed chunk size {line[:40]!r}") from None
            if size < 0:
                raise HTTPProtocolError(f"malformed chunk size {line[:40]!r}")
            self._remaining = size
            self._state = _CHUNK_DATA if size else _TRAILER
        elif state == _CHUNK_END:
            if line:
                raise HTTPProtocolError("chunk data longer than its declared size")
            self._state = _CHUNK_SIZE
        elif not line:  # TRAILER: an empty line ends the message
            self._complete()
        return end + 2

    def _complete(self) -> None:
        self._state = _HEAD
        body = None
        if self._keep_body:
            body = b"".join(self._parts)
            self._parts = []
        self._on_response(self._status, self._keep_alive, body)


class SetupConnection:
    """A plain keep-alive client for requests made before the run (metadata), not the load."""

    def __init__(self, target: Target, timeout_s: float, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._headers = list(headers)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of `GET path`; OSError or TimeoutError when the server does not answer."""
        return await self.send(request_head("GET", path, self._target.host_header, None, self._headers))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Status and body of the answer to a whole pre-built request (head and body)."""
        answers: list[tuple[int, bool, bytes]] = []
        parser = ResponseParser(lambda s, k, b: answers.append((s, k, b or b"")), keep_body=True)
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._streams is None:
                    self._streams = await asyncio.open_connection(self._target.host, self._target.port)
                reader, writer = self._streams
                writer.write(request)
                while not answers:
                    data = await reader.read(65536)
                    if not data:
                        parser.feed_eof()
                        if not answers:
                            raise ConnectionResetError("server closed the connection before answering")
                    parser.feed(data)
        except BaseException:
            await self.close()
            raise
        status, keep_alive, body = answers[0]
        if not keep_alive:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
