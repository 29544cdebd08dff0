"""Assembly: repository -> model manager -> data plane -> HTTP app (and the gRPC server in its
lifespan), and running it under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from modelfleet.config import ServerSettings
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.repository.open import open_repository
from modelfleet.server.auth import Guard
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import build_http_app
from modelfleet.server.logs import configure_logging
from modelfleet.server.metrics import Metrics
from modelfleet.workers.fleet import Fleet
from modelfleet.workers.metrics import WorkerCollector
from modelfleet.workers.plan import parse_workers, plan

if TYPE_CHECKING:
    from modelfleet.server.grpc import GrpcFront

log = logging.getLogger(__name__)


def build_app(settings: ServerSettings) -> tuple[ASGIApp, DataPlane]:
    """The ASGI app and its data plane. Models load in the background after start-up, so liveness
    answers at once and readiness turns 200 when the initial loads are done."""
    options = settings.s3.model_dump() if settings.is_object_store else {}
    repository = open_repository(settings.repository, **options)
    specs = plan(parse_workers(settings.workers), settings.memory_budget_bytes())
    manager = Fleet(repository, settings, specs) if specs else ModelManager(repository, settings)
    plane = DataPlane(manager)
    extra = [WorkerCollector(manager)] if isinstance(manager, Fleet) else []
    metrics = Metrics(manager, settings.metrics_top_k, settings.metrics_models, extra=extra)
    guard = Guard.from_settings(settings)  # one for every front: the same keys and rules

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        grpc_front = await _start_grpc(plane, settings, metrics, guard)
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
                await grpc_front.stop(settings.shutdown_timeout_s)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await manager.close()

    return build_http_app(plane, settings, lifespan, metrics, guard), plane


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


async def _poll(manager: ModelManager | Fleet, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await manager.refresh()
        except Exception:
            log.exception("looking for repository changes failed; trying again in %g s", every_s)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def serve(settings: ServerSettings) -> None:
    """Run the server until SIGINT / SIGTERM, then drain and exit 0."""
    import uvicorn

    configure_logging(settings.log_level, settings.log_format)
    app, plane = build_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            plane.draining = True  # readiness answers 503 from this moment
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
        http="auto",  # httptools when installed
        access_log=False,
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (configure_logging), in the same format
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on",
    )
    Server(config).run()
