"""The open loop: requests leave at scheduled times, whatever the server answers, over a pool of
keep-alive connections that grows as needed up to `--max-connections`.

A due request takes an idle connection, or opens a new one (the connect time counts in its
latency); with the pool full it is counted as client_saturated and never sent, so the offered load
does not bend to the server. Latency runs from the scheduled time to the answer's last byte, which
charges any lateness of the client or queueing in the server to the request (no coordinated
omission). Every outcome is kept, one row per request, for the statistics to slice afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from array import array
from collections.abc import Callable, Iterator
from time import perf_counter_ns
from typing import cast

from modelfleet.bench.client import WATCH_S, ErrorKind, PlanItem, Request, build_plan, watch_timeouts
from modelfleet.bench.httpwire import HTTPProtocolError, ResponseParser
from modelfleet.bench.messages import OpenLoopJob, OpenShareResult, ShareJob
from modelfleet.bench.schedule import arrival_times, pace
from modelfleet.bench.spec import Phase

# client-side outcomes travel in the status array as negative codes
FAILURE_CODES: dict[ErrorKind, int] = {kind: -(i + 1) for i, kind in enumerate(ErrorKind)}
SATURATED_CODE = FAILURE_CODES[ErrorKind.SATURATED]
SPARE_FILES = 64  # file descriptors besides the connections: pipes, the event loop, imports


def raise_file_limit(needed: int) -> None:
    """Raise this process's soft open-file limit towards `needed`, as far as the hard limit allows."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class OpenShare:
    """One process's part of an open-loop run: its schedule, its pool, and what they record."""

    def __init__(self, job: ShareJob) -> None:
        if job.open_loop is None:
            raise ValueError("an open-loop share needs a job with an open-loop schedule")
        self.job = job
        self.schedule: OpenLoopJob = job.open_loop
        self.plan: Iterator[PlanItem] = itertools.cycle(build_plan(job.workload, job.seed))
        self.idle: list[PooledConnection] = []  # a stack: the warmest connection goes first
        self.connections: set[PooledConnection] = set()
        self.opening = 0
        self.peak_connections = 0
        self.outstanding = 0  # requests sent (or connecting) and not ended yet
        self.all_ended = asyncio.Event()
        self.record_from_ns = 0
        self.warmup_errors = 0
        self._connects: set[asyncio.Task[None]] = set()
        self._scheduled, self._lags, self._latencies = array("q"), array("q"), array("q")
        self._statuses, self._models = array("h"), array("i")
        self._cpu_from = 0.0

    def record(self, scheduled_ns: int, sent_ns: int, done_ns: int, status: int, model: int) -> None:
        """Keep one request's outcome (HTTP status or negative failure code) if it was due in the window."""
        if status != SATURATED_CODE:
            self.outstanding -= 1
            if not self.outstanding:
                self.all_ended.set()
        if scheduled_ns < self.record_from_ns:
            if not 200 <= status < 300:
                self.warmup_errors += 1
            return
        self._scheduled.append(scheduled_ns - self.record_from_ns)
        self._lags.append(sent_ns - scheduled_ns)
        self._latencies.append(done_ns - scheduled_ns)
        self._statuses.append(status)
        self._models.append(model)

    def fail(self, kind: ErrorKind, scheduled_ns: int, sent_ns: int, model: int) -> None:
        self.record(scheduled_ns, sent_ns, perf_counter_ns(), FAILURE_CODES[kind], model)

    async def run(self) -> OpenShareResult:
        raise_file_limit(self.job.connections + SPARE_FILES)
        loop = asyncio.get_running_loop()
        phases = self.schedule.phases
        warmup = [Phase(self.job.warmup_s, phases[0].rate_per_s)] if self.job.warmup_s > 0 else []
        start = perf_counter_ns()
        self.record_from_ns = start + round(self.job.warmup_s * 1e9)
        times = arrival_times(
            [*warmup, *phases],
            self.schedule.arrivals,
            start,
            self.job.seed,
            self.schedule.share,
            self.schedule.shares,
        )
        self._cpu_from = time.process_time()
        loop.call_later(self.job.warmup_s, self._start_cpu_clock)
        watchdog = asyncio.create_task(watch_timeouts(self.connections, self.job.timeout_s))
        try:
            await pace(times, self.fire)
            await self._drain()
            cpu_s = time.process_time() - self._cpu_from
        finally:
            for task in [*self._connects, watchdog]:
                task.cancel()
            closing = [conn.close(abort=True) for conn in list(self.connections)]
            await asyncio.gather(*self._connects, watchdog, *closing, return_exceptions=True)
        return self.result(cpu_s)

    def result(self, cpu_s: float) -> OpenShareResult:
        return OpenShareResult(
            scheduled_ns=self._scheduled.tobytes(),
            lag_ns=self._lags.tobytes(),
            latency_ns=self._latencies.tobytes(),
            statuses=self._statuses.tobytes(),
            model_indexes=self._models.tobytes(),
            warmup_errors=self.warmup_errors,
            cpu_s=cpu_s,
            peak_connections=self.peak_connections,
        )

    def _start_cpu_clock(self) -> None:
        self._cpu_from = time.process_time()

    def fire(self, scheduled_ns: int) -> None:
        """Send the next request of the plan as due at `scheduled_ns`, or count it as client_saturated."""
        model, request = next(self.plan)
        if self.idle:
            self.outstanding += 1
            self.idle.pop().send(scheduled_ns, model, request)
        elif len(self.connections) + self.opening < self.job.connections:
            self.outstanding += 1
            self.opening += 1
            self.peak_connections = max(self.peak_connections, len(self.connections) + self.opening)
            task = asyncio.get_running_loop().create_task(self._open(scheduled_ns, model, request))
            self._connects.add(task)
            task.add_done_callback(self._connects.discard)
        else:  # never sent: no lag, no latency
            self.record(scheduled_ns, scheduled_ns, scheduled_ns, SATURATED_CODE, model)

    async def _open(self, scheduled_ns: int, model: int, request: Request) -> None:
        """A new connection for a request that found none idle; it joins the pool after its answer."""
        loop = asyncio.get_running_loop()
        target = self.job.workload.target
        try:
            async with asyncio.timeout(self.job.timeout_s):
                _, conn = await loop.create_connection(
                    lambda: PooledConnection(self), target.host, target.port
                )
        except OSError:  # TimeoutError included
            self.fail(ErrorKind.CONNECT, scheduled_ns, scheduled_ns, model)
            return
        finally:
            self.opening -= 1
        if conn.lost:  # closed by the peer before it could be used
            self.fail(ErrorKind.READ, scheduled_ns, scheduled_ns, model)
        else:
            conn.send(scheduled_ns, model, request)

    async def _drain(self) -> None:
        """Wait for every request due in the window to end: answered, failed, or timed out."""
        if self.outstanding:
            self.all_ended.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.job.timeout_s + 2 * WATCH_S):
                    await self.all_ended.wait()
        for conn in list(self.connections):
            if conn.in_flight:
                conn.fail(ErrorKind.TIMEOUT)


class PooledConnection(asyncio.Protocol):
    """One keep-alive connection of the pool: at most one request in flight, idle otherwise."""

    def __init__(self, share: OpenShare) -> None:
        self.share = share
        self.parser = ResponseParser(self._on_response)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.in_flight = False
        self.lost = False
        self.model = -1
        self.scheduled_ns = self.sent_ns = 0
        self._closing = False
        self._write: Callable[[Request], None] = lambda _: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self._write = self.transport.writelines
        self.share.connections.add(self)

    def send(self, scheduled_ns: int, model: int, request: Request) -> None:
        self.scheduled_ns = scheduled_ns
        self.model = model
        self.in_flight = True
        self.sent_ns = perf_counter_ns()
        self._write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except HTTPProtocolError:
            self.fail(ErrorKind.PROTOCOL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        share = self.share
        share.connections.discard(self)
        if not self._closing:
            if self in share.idle:  # an idle connection the server closed (keep-alive timeout)
                share.idle.remove(self)
            with contextlib.suppress(HTTPProtocolError):
                self.parser.feed_eof()
            if self.in_flight:
                share.fail(ErrorKind.READ, self.scheduled_ns, self.sent_ns, self.model)
        self.in_flight = False
        if not self.closed.done():
            self.closed.set_result(None)

    def _on_response(self, status: int, keep_alive: bool, body: bytes | None) -> None:
        now = perf_counter_ns()
        if not self.in_flight:
            raise HTTPProtocolError("a response arrived with no request in flight")
        self.in_flight = False
        self.share.record(self.scheduled_ns, self.sent_ns, now, status, self.model)
        if keep_alive and not self._closing:
            self.share.idle.append(self)
        else:
            self.close()

    def fail(self, kind: ErrorKind) -> None:
        """Count an error against the request in flight (if any) and drop the connection."""
        if self.in_flight:
            self.in_flight = False
            self.share.fail(kind, self.scheduled_ns, self.sent_ns, self.model)
        self.close(abort=True)

    def close(self, abort: bool = False) -> asyncio.Future[None]:
        if not self._closing and self in self.share.idle:
            self.share.idle.remove(self)
        self._closing = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        return self.closed
