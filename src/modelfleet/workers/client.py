"""The front's end of one worker's socket: many concurrent requests multiplexed by id."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable, Sequence

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

SWEEP_S = 1.0  # how often waiting requests' deadlines are checked (their precision)

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
    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self._pending: dict[
            int, tuple[asyncio.Future[tuple[m.Message, memoryview]], str, float, float | None]
        ] = {}
        self._next = 0
        self._loop = asyncio.get_running_loop()
        self._sweep: asyncio.TimerHandle | None = None
        self.failed = 0  # requests that were waiting when the connection was lost
        self.lost: asyncio.Future[None] = self._loop.create_future()
        # Called at the moment the loss is read, before any waiting request resumes: the router
        # must forget the worker before a request can be routed to it again (a done-callback on
        # `lost` would leave a loop turn in which new requests still pick the dead worker).
        self.on_lost: Callable[[], None] | None = None
        self.protocol = m.FrameProtocol(self._answer, self._fail_all)

    @classmethod
    async def open(cls, worker_id: int, sock: socket.socket) -> Connection:
        connection = cls(worker_id)
        await asyncio.get_running_loop().create_unix_connection(lambda: connection.protocol, sock=sock)
        return connection

    @property
    def alive(self) -> bool:
        return not self.lost.done()

    def next_id(self) -> int:
        self._next += 1
        return self._next

    async def request(
        self,
        header: m.Message,
        buffers: Sequence[memoryview | bytes] = (),
        model: str = "",
        within_s: float | None = None,
    ) -> tuple[m.Message, memoryview]:
        """Send one message (its `id` from next_id()) and wait for the answer to it, at most
        `within_s` (then 503: the worker is taken as hung for this request)."""
        ident: int = getattr(header, "id", 0)
        loop = self._loop
        future: asyncio.Future[tuple[m.Message, memoryview]] = loop.create_future()
        if not self.alive or not self.protocol.send(header, buffers):
            raise self._died(model)
        deadline = math.inf
        if within_s is not None:
            deadline = loop.time() + within_s
            if self._sweep is None:
                self._sweep = loop.call_later(SWEEP_S, self._expire)
        self._pending[ident] = (future, model, deadline, within_s)
        try:
            return await future
        finally:
            self._pending.pop(ident, None)  # a caller gone (timeout, client left): its answer is dropped

    def _answer(self, message: m.Message, buffers: memoryview) -> None:
        entry = self._pending.pop(getattr(message, "id", -1), None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((message, buffers))

    def _expire(self) -> None:
        """Fail the requests past their deadline; sweep again while any has one."""
        self._sweep = None
        now = self._loop.time()
        timed = False
        for future, model, deadline, within_s in list(self._pending.values()):
            if deadline <= now and not future.done():
                what = f" for model '{model}'" if model else ""
                future.set_exception(
                    Unavailable(f"worker {self.worker_id} did not answer{what} within {within_s:g} s; retry")
                )
            elif deadline != math.inf:
                timed = True
        if timed and self.alive:
            self._sweep = self._loop.call_later(SWEEP_S, self._expire)

    def _died(self, model: str) -> Unavailable:
        what = f" while running model '{model}'" if model else ""
        return Unavailable(f"worker {self.worker_id} died{what}; retry")

    def _fail_all(self, exc: BaseException | None) -> None:
        if isinstance(exc, m.FrameError):
            log.error("worker %d sent a bad frame (%s); dropping its connection", self.worker_id, exc)
        pending, self._pending = self._pending, {}
        self.failed += len(pending)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for future, model, _, _ in pending.values():
            if not future.done():
                future.set_exception(self._died(model))
        if not self.lost.done():
            self.lost.set_result(None)
            if self.on_lost is not None:
                self.on_lost()

    def close(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.close()
