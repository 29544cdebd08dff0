"""The front's end of one worker's socket: many concurrent requests multiplexed by id.

A reader task matches answers to waiting futures. When the worker's end closes (it died, it was
killed), every request still waiting fails at once with a 503 naming the worker and the model,
and `lost` resolves so that the supervisor can restart the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from modelfleet.errors import (
    BadRequest,
    DeadlineExceeded,
    InferenceFailed,
    InsufficientMemory,
    ModelfleetError,
    NotFound,
    Overloaded,
    Unavailable,
)
from modelfleet.workers import messages as m

log = logging.getLogger(__name__)

_ERRORS: dict[int, type[ModelfleetError]] = {
    400: BadRequest,
    404: NotFound,
    429: Overloaded,
    500: InferenceFailed,
    503: Unavailable,
    504: DeadlineExceeded,
    507: InsufficientMemory,
}


def error_of(failed: m.Failed) -> ModelfleetError:
    """The worker's error as the front raises it: same status, same message."""
    kind = _ERRORS.get(failed.status)
    if kind is not None:
        return kind(failed.message)
    error = ModelfleetError(failed.message)
    error.status = failed.status
    return error


class Connection:
    def __init__(self, worker_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.worker_id = worker_id
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, tuple[asyncio.Future[tuple[m.Message, memoryview]], str]] = {}
        self._next = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read())

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def request(
        self, header: m.Message, buffers: Sequence[memoryview | bytes] = (), model: str = ""
    ) -> tuple[m.Message, memoryview]:
        """Send one message (its `id` from next_id()) and wait for the answer to it."""
        if not self.alive:
            raise self._died(model)
        ident: int = getattr(header, "id", 0)
        future: asyncio.Future[tuple[m.Message, memoryview]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = (future, model)
        try:
            try:
                self._writer.writelines(m.encode(header, buffers))
            except (RuntimeError, ConnectionError):  # closed under us: the reader is failing everyone
                raise self._died(model) from None
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
            return await future
        finally:
            self._pending.pop(ident, None)  # a caller gone (timeout, client left): its answer is dropped

    async def _read(self) -> None:
        reader = self._reader
        try:
            while True:
                prefix = await reader.readexactly(m.PREFIX.size)
                header_bytes, buffer_bytes = m.frame_lengths(prefix)
                body = await reader.readexactly(header_bytes + buffer_bytes)
                message, buffers = m.decode(body, header_bytes)
                entry = self._pending.pop(getattr(message, "id", -1), None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result((message, buffers))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except m.FrameError as exc:
            log.error("worker %d sent a bad frame (%s); dropping its connection", self.worker_id, exc)
        finally:
            self._fail_all()

    def _died(self, model: str) -> Unavailable:
        what = f" while running model '{model}'" if model else ""
        return Unavailable(f"worker {self.worker_id} died{what}; retry")

    def _fail_all(self) -> None:
        pending, self._pending = self._pending, {}
        for future, model in pending.values():
            if not future.done():
                future.set_exception(self._died(model))
        if not self.lost.done():
            self.lost.set_result(None)
        self._writer.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
