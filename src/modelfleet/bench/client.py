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
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter_ns
from typing import Protocol, cast

import numpy as np

from modelfleet.bench import popularity
from modelfleet.bench.httpwire import HTTPProtocolError, ResponseParser, model_path, request_head
from modelfleet.bench.messages import ShareJob, ShareResult, Workload

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
        path = model_path(target, model, "/infer")
        variants: list[Request] = []
        for index in workload.body_sets[body_set]:
            body = workload.bodies[index]
            head = request_head("POST", path, target.host_header, len(body.content), body.headers())
            variants.append((head + body.content,) if concat else (head, body.content))
        requests.append(variants)
    return requests


def build_plan(workload: Workload, seed: int) -> list[PlanItem]:
    """A long pre-sampled sequence of (model, request) for the connections to walk in turn."""
    requests = build_requests(workload)
    count = len(requests)
    length = min(PLAN_MAX, max(PLAN_MIN, PLAN_PER_MODEL * count))
    rng = np.random.default_rng(seed)
    if count > 1:
        cdf = popularity.cdf(count, workload.popularity, workload.zipf_s)
        models = popularity.sample(cdf, length, rng).tolist()
    else:
        models = [0] * length
    variants = rng.integers(0, 1 << 30, size=length).tolist()
    return [(m, requests[m][v % len(requests[m])]) for m, v in zip(models, variants, strict=True)]


class Share:
    """One process's part of a run: its connections, the shared plan, and what they record."""

    def __init__(self, job: ShareJob) -> None:
        self.job = job
        self.plan: Iterator[PlanItem] = itertools.cycle(build_plan(job.workload, job.seed))
        self.latencies = array("q")
        self.models = array("i")
        self.errors: dict[str, int] = {}
        self.model_errors: dict[int, int] = {}
        self.warmup_errors = 0
        self.connections: set[Connection] = set()
        self.record_from_ns = self.end_ns = 0

    def error(self, kind: str, model: int, now: int) -> None:
        if now < self.record_from_ns:
            self.warmup_errors += 1
        elif now <= self.end_ns:
            kind = str(kind)  # a plain str key, not an ErrorKind, for the report
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if model >= 0:
                self.model_errors[model] = self.model_errors.get(model, 0) + 1

    async def run(self) -> ShareResult:
        start = perf_counter_ns()
        self.record_from_ns = start + int(self.job.warmup_s * 1e9)
        self.end_ns = self.record_from_ns + int(self.job.duration_s * 1e9)
        slots = [asyncio.create_task(self._keep_connected()) for _ in range(self.job.connections)]
        watchdog = asyncio.create_task(watch_timeouts(self.connections, self.job.timeout_s))
        await asyncio.sleep(max(0, self.record_from_ns - perf_counter_ns()) / 1e9)
        cpu_start = time.process_time()
        await asyncio.sleep(max(0, self.end_ns - perf_counter_ns()) / 1e9)
        cpu_s = time.process_time() - cpu_start
        # each connection closes after its answer in flight; cut the ones that take too long
        _, pending = await asyncio.wait(slots, timeout=DRAIN_S)
        closing = [c.close(abort=True) for c in list(self.connections)]
        for task in [*pending, watchdog]:
            task.cancel()
        await asyncio.gather(*pending, watchdog, *closing, return_exceptions=True)
        return ShareResult(
            latencies_ns=self.latencies.tobytes(),
            model_indexes=self.models.tobytes(),
            errors=self.errors,
            model_errors=self.model_errors,
            warmup_errors=self.warmup_errors,
            cpu_s=cpu_s,
        )

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        target = self.job.workload.target
        while perf_counter_ns() < self.end_ns:
            try:
                async with asyncio.timeout(self.job.timeout_s):
                    _, conn = await loop.create_connection(lambda: Connection(self), target.host, target.port)
            except OSError:  # TimeoutError included
                self.error(ErrorKind.CONNECT, -1, perf_counter_ns())
                await asyncio.sleep(RETRY_S)
                continue
            await conn.closed


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

    def __init__(self, share: Share) -> None:
        self.share = share
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
        if perf_counter_ns() < self.share.end_ns:
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
                self.share.error(ErrorKind.READ, self.model, perf_counter_ns())
        self.in_flight = False
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_response(self, status: int, keep_alive: bool, body: bytes | None) -> None:
        now = perf_counter_ns()
        share = self.share
        if not self.in_flight:
            raise HTTPProtocolError("a response arrived with no request in flight")
        self.in_flight = False
        if 200 <= status < 300:
            if share.record_from_ns <= now <= share.end_ns:
                share.latencies.append(now - self.sent_ns)
                share.models.append(self.model)
        else:
            share.error(http_error(status), self.model, now)
        if keep_alive and now < share.end_ns:
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
        self.share.error(kind, self.model if self.in_flight else -1, perf_counter_ns())
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
