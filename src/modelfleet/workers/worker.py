"""The worker loop: a ModelManager of its own, driven by the front's messages over one socket."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import time
from typing import Any

import msgspec

from modelfleet.config import ServerSettings
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.engine.memory import process_rss
from modelfleet.errors import ModelfleetError
from modelfleet.protocol.v2 import InferInput, InferRequest, RequestedOutput
from modelfleet.repository.open import open_repository
from modelfleet.workers import messages as m

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, start: m.Start) -> None:
        settings = ServerSettings(**_settings_doc(start))
        options = settings.s3.model_dump() if settings.is_object_store else {}
        options["selection"] = settings.model_selection()
        self.id = start.worker_id
        self.manager = ModelManager(open_repository(settings.repository, **options), settings)
        self.protocol = m.FrameProtocol(self._received, self._lost)
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._lost, None)
        await loop.create_unix_connection(lambda: self.protocol, sock=sock)
        await self.manager.start()
        self.protocol.send(m.Hello(os.getpid()))
        try:
            await self._done  # the front is gone, or SIGTERM
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.manager.close()
            if self.protocol.transport is not None:
                self.protocol.transport.close()

    def _lost(self, exc: BaseException | None) -> None:
        if isinstance(exc, m.FrameError):
            log.error("worker %d: bad frame from the front (%s); stopping", self.id, exc)
        if not self._done.done():
            self._done.set_result(None)

    def _received(self, message: m.Message, buffers: memoryview) -> None:
        task = asyncio.ensure_future(self._handle(message, buffers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, header: m.Message, buffers: list[memoryview | bytes] | None = None) -> None:
        self.protocol.send(header, buffers or ())

    async def _handle(self, message: m.Message, buffers: memoryview) -> None:
        ident = getattr(message, "id", 0)
        try:
            if isinstance(message, m.Infer):
                await self._infer(message, buffers)
            elif isinstance(message, m.Load):
                await self.manager.load(message.model)
                self._send(self._loaded(message))
            elif isinstance(message, m.Unload):
                await self.manager.unload(message.model)
                self._send(m.Done(message.id))
            elif isinstance(message, m.Stats):
                self._send(self._stats(message.id))
            else:
                raise m.FrameError(f"unexpected {type(message).__name__} message")
        except ModelfleetError as exc:
            self._send(m.Failed(ident, exc.status, exc.message))
        except Exception as exc:
            log.exception("worker %d: %s failed", self.id, type(message).__name__)
            self._send(m.Failed(ident, 500, f"internal error in worker {self.id} ({type(exc).__name__})"))

    async def _infer(self, message: m.Infer, buffers: memoryview) -> None:
        manager = self.manager
        model = manager.resident(message.model, message.version) or await manager.acquire(
            message.model, message.version
        )
        tensors = message.inputs
        inputs = [
            InferInput(t.name, t.datatype, t.shape, array)
            for t, array in zip(tensors, m.arrays(tensors, buffers), strict=True)
        ]
        wanted = None if message.outputs is None else [RequestedOutput(name) for name in message.outputs]
        request = InferRequest(inputs, wanted, message.request_id, message.parameters)
        response = await model.infer(request, time.perf_counter_ns())
        described, raw = m.describe([(o.name, o.datatype, o.data) for o in response.outputs])
        result = m.Result(
            message.id, response.model_name, response.model_version, described, response.parameters
        )
        self._send(result, raw)

    def _loaded(self, message: m.Load) -> m.Loaded:
        record = self.manager.record(message.model)
        ready = record.ready if record is not None else {}
        versions = [m.Version(n, c.config.model_dump_json(), c.nbytes) for n, c in sorted(ready.items())]
        return m.Loaded(message.id, message.model, versions)

    def _stats(self, ident: int) -> m.StatsReply:
        manager = self.manager
        usage = resource.getrusage(resource.RUSAGE_SELF)
        models = [
            m.ModelUse(
                c.name,
                c.version_str,
                c.nbytes,
                c.in_flight,
                c.stats.as_dict(c.name, c.version_str),
                manager.residency_of(c.name),
                c.stats.wire(),
            )
            for c in manager.loaded()
        ]
        cpu_seconds = usage.ru_utime + usage.ru_stime
        return m.StatsReply(
            ident, process_rss().total, cpu_seconds, msgspec.to_builtins(manager.memory()), models
        )


def _settings_doc(start: m.Start) -> dict[str, Any]:
    """The front's settings, narrowed to this worker: its budget share, its cores, no start-up
    loads (the front places models) and no repository polling (the front refreshes)."""
    import orjson

    doc: dict[str, Any] = orjson.loads(start.settings_json)
    doc.update(
        memory_budget=str(start.budget_bytes),
        intra_op_threads=doc.get("intra_op_threads") or len(start.cores),
        startup_load="none",
        repository_poll_s=0,
        workers="0",
        neuron_core_groups="",  # the front's plan; this worker sees its group in NEURON_RT_VISIBLE_CORES
    )
    return doc


async def serve(start: m.Start, sock: socket.socket) -> None:
    await Worker(start).run(sock)
