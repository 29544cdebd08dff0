"""The closed loop itself: connections that send their next request as soon as an answer is in.

Per request the hot path is one `data_received` call: frame the response, read the clock, append
the latency and model index to two arrays, take the next (model, bytes) pair from a pre-sampled
plan and write it. No coroutine, future, timer or encoding work happens per request; a watchdog
looks for timeouts a few times a second instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter_ns
from typing import Protocol, cast

import numpy as np

from modelfleet.bench import popularity
from modelfleet.bench.httpwire import HTTPProtocolError, ResponseParser, infer_route, request_head
from modelfleet.bench.messages import ShareJob, ShareResult, Workload
from modelfleet.bench.record import Recorder

Request = tuple[bytes, ...]  # the buffers of one request, written with one writelines
PlanItem = tuple[int, Request]  # (model index, request)

CONCAT_LIMIT_BYTES = 64 * 1024 * 1024  # above this, heads and shared bodies stay separate buffers
PLAN_MIN, PLAN_MAX, PLAN_PER_MODEL = 1 << 16, 1 << 20, 64
RETRY_S = 0.05  # pause after a failed connect
DRAIN_S = 1.0  # how long the answers in flight at the end may take before connections are cut
WATCH_S = 0.25  # timeout check interval (bounded by the timeout itself)


class ErrorKind(enum.StrEnum):
    CONNECT = "connect"  # could not open a connection
    TIMEOUT = "timeout"  # no complete answer within --timeout
    READ = "read"  # connection closed or reset with a request in flight
    PROTOCOL = "protocol"  # not a well-formed HTTP/1.1 response
    SATURATED = "client_saturated"  # open loop: due with no free connection and the pool full; not sent


def http_error(status: int) -> str:
    return f"http_{status}"


def build_requests(workload: Workload) -> list[list[Request]]:
    """Every model's request variants: one per body of its signature, head and body pre-encoded."""
    target = workload.target
    sizes = [sum(len(workload.bodies[b].content) for b in s) for s in workload.body_sets]
    total = sum(sizes[s] for s in workload.model_body_set)
    concat = total <= CONCAT_LIMIT_BYTES
    requests: list[list[Request]] = []
    for model, body_set in zip(workload.models, workload.model_body_set, strict=True):
        path, headers = infer_route(target, model)
        headers += workload.headers
        variants: list[Request] = []
        for index in workload.body_sets[body_set]:
            body = workload.bodies[index]
            head = request_head(
                "POST", path, target.host_header, len(body.content), [*body.headers(), *headers]
            )
            variants.append((head + body.content,) if concat else (head, body.content))
        requests.append(variants)
    return requests


def build_plan_items(workload: Workload, seed: int) -> list[tuple[int, int]]:
    """A long pre-sampled sequence of (model index, variant index into the model's body set)."""
    count = len(workload.models)
    length = min(PLAN_MAX, max(PLAN_MIN, PLAN_PER_MODEL * count))
    rng = np.random.default_rng(seed)
    if count > 1:
        cdf = popularity.cdf(count, workload.popularity, workload.zipf_s)
        models = popularity.sample(cdf, length, rng).tolist()
    else:
        models = [0] * length
    variants = rng.integers(0, 1 << 30, size=length).tolist()
    sizes = [len(workload.body_sets[s]) for s in workload.model_body_set]
    return [(m, v % sizes[m]) for m, v in zip(models, variants, strict=True)]


def build_plan(workload: Workload, seed: int) -> list[PlanItem]:
    """A long pre-sampled sequence of (model, request) for the connections to walk in turn."""
    requests = build_requests(workload)
    return [(m, requests[m][v]) for m, v in build_plan_items(workload, seed)]


class Share:
    """One process's part of a run: its users (one connection each), the shared plan, and the
    `Recorder` that keeps what they see and drives the users' clock."""

    def __init__(self, job: ShareJob) -> None:
        self.job = job
        self.plan: Iterator[PlanItem] = itertools.cycle(build_plan(job.workload, job.seed))
        self.record = Recorder(job)
        self.connections: set[Connection] = set()
        self._users: set[asyncio.Task[None]] = set()

    async def run(self) -> ShareResult:
        watchdog = asyncio.create_task(watch_timeouts(self.connections, self.job.timeout_s))
        await self.record.drive(self._start_user)
        # each connection closes after its answer in flight; cut the ones that take too long
        _, pending = await asyncio.wait(self._users, timeout=DRAIN_S) if self._users else (set(), set())
        closing = [c.close(abort=True) for c in list(self.connections)]
        for task in [*pending, watchdog]:
            task.cancel()
        await asyncio.gather(*pending, watchdog, *closing, return_exceptions=True)
        return self.record.result()

    def _start_user(self, slot: int) -> None:
        task = asyncio.create_task(self._keep_connected(slot))
        self._users.add(task)
        task.add_done_callback(self._users.discard)

    async def _keep_connected(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        target, record = self.job.workload.target, self.record
        try:
            while perf_counter_ns() < record.end_ns and slot < record.users:
                try:
                    async with asyncio.timeout(self.job.timeout_s):
                        _, conn = await loop.create_connection(
                            lambda: Connection(self, slot), target.host, target.port
                        )
                except OSError:  # TimeoutError included
                    record.error(ErrorKind.CONNECT, -1, perf_counter_ns())
                    await asyncio.sleep(RETRY_S)
                    continue
                await conn.closed
        finally:
            record.running.discard(slot)


class Watched(Protocol):
    """What the timeout watch needs of a connection (closed and open loop alike)."""

    in_flight: bool
    sent_ns: int

    def fail(self, kind: ErrorKind) -> None: ...


async def watch_timeouts(connections: Iterable[Watched], timeout_s: float) -> None:
    """Fail the request of any connection that has waited past `timeout_s` (runs until cancelled)."""
    interval, timeout_ns = min(WATCH_S, timeout_s / 4), int(timeout_s * 1e9)
    while True:
        await asyncio.sleep(interval)
        now = perf_counter_ns()
        for conn in list(connections):
            if conn.in_flight and now - conn.sent_ns > timeout_ns:
                conn.fail(ErrorKind.TIMEOUT)


class Connection(asyncio.Protocol):
    """One keep-alive connection with exactly one request in flight."""

    def __init__(self, share: Share, slot: int) -> None:
        self.share = share
        self.record = share.record
        self.slot = slot
        self.parser = ResponseParser(self._on_response)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_flight = False
        self.model = -1
        self.sent_ns = 0
        self._closing = False
        self._plan = share.plan
        self._write: Callable[[Request], None] = lambda _: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self._write = self.transport.writelines
        self.share.connections.add(self)
        if perf_counter_ns() < self.record.end_ns and self.slot < self.record.users:
            self._send()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except HTTPProtocolError:
            self.fail(ErrorKind.PROTOCOL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.share.connections.discard(self)
        if not self._closing:
            with contextlib.suppress(HTTPProtocolError):
                self.parser.feed_eof()
            if self.in_flight:
                self.record.error(ErrorKind.READ, self.model, perf_counter_ns())
        self.in_flight = False
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_response(self, status: int, keep_alive: bool, body: bytes | None) -> None:
        now = perf_counter_ns()
        record = self.record
        if not self.in_flight:
            raise HTTPProtocolError("a response arrived with no request in flight")
        self.in_flight = False
        if 200 <= status < 300:
            record.ok(self.model, self.sent_ns, now)
        else:
            record.error(http_error(status), self.model, now)
        if keep_alive and now < record.end_ns and self.slot < record.users:
            self._send()
        else:
            self.close()

    def _send(self) -> None:
        self.model, request = next(self._plan)
        self.in_flight = True
        self.sent_ns = perf_counter_ns()
        self._write(request)

    def fail(self, kind: ErrorKind) -> None:
        """Count an error against the request in flight (if any) and drop the connection."""
        self.record.error(kind, self.model if self.in_flight else -1, perf_counter_ns())
        self.in_flight = False
        self.close(abort=True)

    def close(self, abort: bool = False) -> asyncio.Future[None]:
        self._closing = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        return self.closed


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where installed (it comes with uvicorn[standard]), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
