"""Assembly: repository -> model manager -> data plane -> HTTP app (and the gRPC server in its
lifespan), and running it under uvicorn with one shutdown deadline for both fronts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelfleet.config import ServerSettings
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.engine.ports import ModelHost
from modelfleet.protocol.documents import error_json
from modelfleet.repository.folder import Repository
from modelfleet.repository.open import open_repository
from modelfleet.server.asgi import send_json
from modelfleet.server.auth import Guard
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import build_http_app
from modelfleet.server.logs import configure_logging
from modelfleet.server.metrics import Metrics
from modelfleet.workers.fleet import Fleet
from modelfleet.workers.metrics import WorkerCollector
from modelfleet.workers.plan import WorkerSpec, parse_workers, plan

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from modelfleet.server.grpc import GrpcFront

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 1.0  # after the shutdown deadline, how long unloading may take before the process exits


class Shutdown:
    """The outermost ASGI app: knows every HTTP request in flight and the gRPC front, so that one
    deadline governs both. `begin(timeout_s)` (on SIGTERM): readiness 503 at once, gRPC refuses
    new calls at once (GOAWAY), uvicorn stops accepting; at the deadline `cut()` answers the HTTP
    requests still running with a JSON 503 and the gRPC calls with UNAVAILABLE."""

    def __init__(self, app: ASGIApp, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane
        self.grpc: GrpcFront | None = None  # set by the lifespan once the gRPC front listens
        self.deadline: float | None = None  # loop time of the cut, once shutdown has begun
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cutting = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        self._tasks.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not self._cutting or started:
                raise
            task.uncancel()
            body = error_json("the server is shutting down; retry on another replica")
            await send_json(send, 503, body, [(b"retry-after", b"1"), (b"connection", b"close")])
        finally:
            self._tasks.discard(task)

    def begin(self, timeout_s: float) -> None:
        """Start the shutdown; on the loop's thread. Idempotent."""
        if self.deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + timeout_s
        self.plane.draining = True
        if self.grpc is not None:
            self.grpc.begin_shutdown()
        loop.call_at(self.deadline, self.cut)
        log.info("shutting down: in-flight calls have %g s", timeout_s)

    def cut(self) -> None:
        """The deadline: answer what is still running."""
        self._cutting = True
        if self._tasks:
            log.warning(
                "shutdown deadline: answering %d HTTP request(s) still running with 503", len(self._tasks)
            )
        for task in self._tasks:
            task.cancel("server shutting down")
        if self.grpc is not None:
            self.grpc.end_shutdown()

    def remaining_s(self, default: float) -> float:
        if self.deadline is None:
            return default
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


def build_app(settings: ServerSettings) -> tuple[Shutdown, DataPlane]:
    """The ASGI app and its data plane. Models load in the background after start-up, so liveness
    answers at once and readiness turns 200 when the initial loads are done."""
    options = settings.s3.model_dump() if settings.is_object_store else {}
    options["selection"] = settings.model_selection()
    repository = open_repository(settings.repository, **options)
    manager, extra = _host(repository, settings)
    plane = DataPlane(manager)
    metrics = Metrics(manager, settings.metrics_top_k, settings.metrics_models, extra=extra)
    guard = Guard.from_settings(settings)  # one for every front: the same keys and rules

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        grpc_front = await _start_grpc(plane, settings, metrics, guard)
        shutdown.grpc = grpc_front
        tasks = [asyncio.create_task(manager.start(), name="load-models")]
        if settings.repository_poll_s > 0:
            tasks.append(
                asyncio.create_task(_poll(manager, settings.repository_poll_s), name="poll-repository")
            )
        for task in tasks:
            task.add_done_callback(_log_failure)
        try:
            yield
        finally:
            plane.draining = True
            if grpc_front is not None:
                await grpc_front.stop(shutdown.remaining_s(settings.shutdown_timeout_s))
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await _close(manager, shutdown)

    shutdown = Shutdown(build_http_app(plane, settings, lifespan, metrics, guard), plane)
    return shutdown, plane


def _host(repository: Repository, settings: ServerSettings) -> tuple[ModelHost, list[Collector]]:
    """The models in this process, or in worker processes (--workers) with their /metrics gauges."""
    specs = worker_specs(settings)
    if not specs:
        return ModelManager(repository, settings), []
    fleet = Fleet(repository, settings, specs)
    return fleet, [WorkerCollector(fleet)]


def worker_specs(settings: ServerSettings) -> list[WorkerSpec]:
    """The worker processes to start (none: models run in this process), each with its share of the
    memory budget and its accelerators (GPU, NeuronCore group)."""
    groups = settings.neuron_groups()
    return plan(parse_workers(settings.workers), settings.memory_budget_bytes(), neuron_groups=groups or None)


async def _close(manager: ModelHost, shutdown: Shutdown) -> None:
    """Drain and unload the models. After a SIGTERM, within the deadline plus CLOSE_GRACE_S: a
    model run still going then (a hung or very slow model) is not waited for, the process exits 0
    at once (its threads would otherwise hold the interpreter until they return)."""
    if shutdown.deadline is None:
        await manager.close()
        return
    try:
        async with asyncio.timeout(shutdown.remaining_s(0.0) + CLOSE_GRACE_S):
            await manager.close()
    except TimeoutError:
        log.warning(
            "model runs still going %g s past the shutdown deadline: exiting without them", CLOSE_GRACE_S
        )
        logging.shutdown()
        os._exit(0)


async def _start_grpc(
    plane: DataPlane, settings: ServerSettings, metrics: Metrics, guard: Guard
) -> GrpcFront | None:
    """The gRPC front on grpc_port, in this event loop beside uvicorn; None when grpc_port is 0 or
    the `grpc` extra (protobuf, hpack) is not installed, which is logged."""
    if settings.grpc_port == 0:
        return None
    try:
        from modelfleet.server.grpc import GrpcFront
    except ImportError:
        log.warning("no gRPC server: protobuf or hpack is not installed (pip install 'modelfleet[grpc]')")
        return None
    front = GrpcFront(plane, settings, metrics, guard)
    await front.start()
    return front


async def _poll(manager: ModelHost, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await manager.refresh()
        except Exception:
            log.exception("looking for repository changes failed; trying again in %g s", every_s)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _http_protocol(settings: ServerSettings) -> Any:
    """httptools with our connection limits (server/http1.py) when installed, else uvicorn's choice."""
    try:
        from modelfleet.server.http1 import protocol_for
    except ImportError:
        log.warning("httptools is not installed: no header timeout, header size or connection limits")
        return "auto"
    return protocol_for(settings)


def apply_process_settings(settings: ServerSettings) -> None:
    """What the settings change in the whole process: the GIL's switch interval."""
    if settings.gil_switch_interval_us:
        sys.setswitchinterval(settings.gil_switch_interval_us / 1e6)


def serve(settings: ServerSettings) -> None:
    """Run the server until SIGINT / SIGTERM, then drain and exit 0."""
    import uvicorn

    configure_logging(settings.log_level, settings.log_format)
    apply_process_settings(settings)
    app, plane = build_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            plane.draining = True  # readiness answers 503 from this moment
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(app.begin, settings.shutdown_timeout_s)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal after its graceful shutdown, so the process would end
            # "killed by SIGTERM"; orchestrators expect exit code 0 after a clean drain.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed
        http=_http_protocol(settings),
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]  # a float works
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (configure_logging), in the same format
        # Past our own deadline (Shutdown.cut answers what is left), so that uvicorn never cuts a
        # request with its plain-text 500.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s) + 2,
        lifespan="on",
    )
    Server(config).run()
