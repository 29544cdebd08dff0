"""The infer sequence, once for every transport (V2 REST, gRPC, SageMaker): the log context, the
tenant's quota, the request's body, the model, the decode, the request id, the run (and a client
that leaves meanwhile), the encode, the per-model metrics and the accounting of every error.

A transport parses what is its own (path, key, message), hands its decode and encode steps to
`Inference.run`, and maps what it raises (a ModelfleetError; 500 for anything else, logged here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from modelfleet.engine.ports import ServedModel
from modelfleet.errors import ModelfleetError, Overloaded
from modelfleet.protocol.v2 import InferRequest, InferResponse
from modelfleet.server.asgi import ClientGone
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.logs import begin_request, end_request, set_request_id
from modelfleet.server.quota import Quota

log = logging.getLogger(__name__)

T = TypeVar("T")
Answered = Callable[[str, int, ServedModel | None], None]
Hold = Callable[[], Callable[[], bool]]  # holds the client's connection; returns its release
Leaving = Callable[[asyncio.Task[Any]], Awaitable[None]]  # returns when the client has gone

WATCH_LEAVING_NS = 20_000_000  # watch for a leaving client when the queue ahead is this long
INTERNAL = ModelfleetError("internal server error")  # what a bug answers: 500, no internals


def not_counted(name: str, status: int, model: ServedModel | None) -> None:
    pass


class Inference:
    def __init__(self, plane: DataPlane, answered: Answered | None = None) -> None:
        self._plane = plane
        self._answered = answered or not_counted

    async def run(
        self,
        name: str,
        version: str | None,
        started_ns: int,
        read: Callable[[], Awaitable[Any]] | None,
        decode: Callable[[Any, ServedModel], Awaitable[InferRequest]],
        encode: Callable[[InferResponse, InferRequest], Awaitable[T]],
        *,
        admit: Callable[[], Quota | None] | None = None,
        hold: Hold | None = None,
        leaving: Leaving | None = None,
    ) -> T:
        """One inference request. In order: `admit()` (the transport's checks of method and key:
        the tenant's quota, if any; past it 429, and the client's connection held with `hold`),
        `read()` (the body, once the quota let it in), the model
        (404 / 503 / 507 before a wrong tensor is reported), `decode(read's result, model)`, the
        request id, the run (when it may wait long, `leaving(task)` cancels it once the client
        has gone: ClientGone), `encode(response, request)`. Every answer is counted per model;
        a ModelfleetError is raised for the transport to map, anything else is logged and raised
        as INTERNAL."""
        token = begin_request(name)  # log lines from here on carry the request
        model: ServedModel | None = None
        quota: Quota | None = None
        try:
            tenant = admit() if admit is not None else None
            if tenant is not None:
                _enter(tenant, hold)
                quota = tenant
            got = await read() if read is not None else None
            model = self._plane.resident(name, version) or await self._plane.model(name, version)
            request = await decode(got, model)
            if request.id is not None:
                set_request_id(request.id)
            if leaving is None or model.expected_wait_ns() < WATCH_LEAVING_NS:
                response = await self._plane.infer(model, request, started_ns)
            else:
                response = await self._watched(model, request, started_ns, leaving)
            answer = await encode(response, request)
        except ModelfleetError as exc:
            self._answered(name, exc.status, model)
            raise
        except (ClientGone, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unexpected error in an inference request")
            self._answered(name, INTERNAL.status, model)
            raise INTERNAL from None
        finally:
            if quota is not None:
                quota.leave()
            end_request(token)
        self._answered(name, 200, model)
        return answer

    async def _watched(
        self, model: ServedModel, request: InferRequest, started_ns: int, leaving: Leaving
    ) -> InferResponse:
        """Run a request that is likely to wait in a queue, watching for its client leaving, so
        that a request nobody waits for any more is dropped from the queue and never run. (A
        request that will not wait is run by `run` itself: one coroutine less on the hot path.)"""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(leaving(task))
        try:
            return await self._plane.infer(model, request, started_ns)
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                raise ClientGone from None
            raise
        finally:
            watcher.cancel()


def _enter(quota: Quota, hold: Hold | None) -> None:
    """Count a request in its tenant's quota; past it, 429 and the client's connection held."""
    try:
        quota.enter()
    except Overloaded:
        if hold is not None:
            quota.hold(hold())
        raise
