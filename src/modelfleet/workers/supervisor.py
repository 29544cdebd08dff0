"""Starting, watching and restarting worker processes; reaping the whole tree at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelfleet.errors import ModelfleetError, Unavailable
from modelfleet.workers import messages as m
from modelfleet.workers.client import Connection
from modelfleet.workers.plan import WorkerSpec
from modelfleet.workers.router import Router

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
HUNG_AFTER_REPORTS = 3  # a worker missing this many reports in a row is killed


class WorkerState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(slots=True)
class Backoff:
    """Delay before restarting a worker: none after a crash following a healthy run, doubling
    from `first_s` up to `max_s` while it dies within `healthy_s` of starting."""

    clock: Callable[[], float]
    first_s: float = 0.5
    max_s: float = 30.0
    healthy_s: float = 10.0
    started_at: float = 0.0
    failures: int = 0

    def started(self) -> None:
        self.started_at = self.clock()

    def died(self) -> float:
        """Seconds to wait before the next start."""
        if self.clock() - self.started_at >= self.healthy_s:
            self.failures = 0
        self.failures += 1
        if self.failures == 1:
            return 0.0
        return float(min(self.max_s, self.first_s * 2.0 ** (self.failures - 2)))


@dataclass(slots=True)
class Slot:
    """One worker position: its spec, and the process currently filling it."""

    spec: WorkerSpec
    backoff: Backoff
    state: WorkerState = WorkerState.STOPPED
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    watchers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


async def spawn(spec: WorkerSpec) -> tuple[asyncio.subprocess.Process, socket.socket]:
    """Start one worker; returns it and the front's end of its socketpair."""
    front, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = {**os.environ, **spec.env, "OMP_NUM_THREADS": str(spec.threads)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modelfleet.workers.main", str(child.fileno()),
            pass_fds=(child.fileno(),), env=env, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # signals to the front's group (Ctrl-C, timeout) reach the front only
        )  # fmt: skip
    except BaseException:
        front.close()
        raise
    finally:
        child.close()
    return process, front


async def stop(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout_s`; always reaped."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            log.warning("worker pid %d did not stop within %g s; killing it", process.pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


def now() -> float:
    return time.monotonic()


class Tasks:
    """Background tasks the front starts (restarts, polls, extra copies), cancelled at close."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class Supervisor:
    """The worker processes behind the front: started, watched, restarted after they die or
    hang, stopped at close; the router learns of each worker that comes up or goes."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        settings_json: str,
        router: Router,
        tasks: Tasks,
        on_lost: Callable[[int], object],
    ) -> None:
        self.slots = [Slot(spec, Backoff(time.monotonic)) for spec in specs]
        self.connections: dict[int, Connection] = {}
        self._settings_json = settings_json
        self._router = router
        self._tasks = tasks
        self._on_lost = on_lost
        self._silent: dict[int, int] = {}  # reports missed in a row, per worker
        self.closing = False

    async def start(self) -> None:
        await asyncio.gather(*(self._start(slot) for slot in self.slots))

    async def _start(self, slot: Slot) -> None:
        spec = slot.spec
        slot.state = WorkerState.STARTING
        slot.backoff.started()
        process, sock = await spawn(spec)
        slot.process = process
        try:
            connection = await Connection.open(spec.id, sock)
            start = m.Start(spec.id, spec.device, list(spec.cores), spec.budget_bytes, self._settings_json)
            hello, _ = await asyncio.wait_for(connection.request(start), START_TIMEOUT_S)
            if not isinstance(hello, m.Hello):
                raise m.FrameError(f"expected Hello, got {type(hello).__name__}")
        except (OSError, TimeoutError, ModelfleetError, m.FrameError) as exc:
            log.error("worker %d (pid %d) failed to start: %s", spec.id, process.pid, exc)
            sock.close()
            await stop(process, 1.0)
            self._tasks.spawn(self._restart(slot), f"restart-worker-{spec.id}")
            return
        self.connections[spec.id] = connection
        self._router.worker_up(spec.id, spec.budget_bytes, len(spec.neuron_cores))
        slot.state = WorkerState.READY
        log.info("worker %d ready: pid %d on %s", spec.id, process.pid, spec.device)
        connection.on_lost = lambda: self._lost(slot, connection)
        if not connection.alive:  # lost while it said hello
            self._lost(slot, connection)

    def _lost(self, slot: Slot, connection: Connection) -> None:
        if self.connections.get(slot.spec.id) is connection:
            del self.connections[slot.spec.id]
        models = self._router.worker_lost(slot.spec.id)
        self._on_lost(slot.spec.id)
        if self.closing or slot.stopping:
            return
        log.error(
            "worker %d (pid %s) died with %d requests in flight; models it held: %s",
            slot.spec.id, slot.pid, connection.failed, ", ".join(models) or "none",
        )  # fmt: skip
        slot.state = WorkerState.RESTARTING
        self._tasks.spawn(self._restart(slot), f"restart-worker-{slot.spec.id}")

    async def _restart(self, slot: Slot) -> None:
        if slot.process is not None:
            await stop(slot.process, 1.0)  # reap it (kill it if only its socket died)
        delay = slot.backoff.died()
        slot.state = WorkerState.RESTARTING
        if delay:
            log.warning("worker %d keeps dying; restarting it in %.1f s", slot.spec.id, delay)
            await asyncio.sleep(delay)
        if self.closing:
            return
        slot.restarts += 1
        await self._start(slot)

    async def close(self, timeout_s: float) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after `timeout_s`) and reap it."""
        self.closing = True
        for slot in self.slots:
            slot.stopping = True
        await asyncio.gather(*(stop(s.process, timeout_s) for s in self.slots if s.process is not None))
        for slot in self.slots:
            slot.state = WorkerState.STOPPED
        for connection in list(self.connections.values()):
            connection.close()

    def connection(self, worker: int, model: str) -> Connection:
        connection = self.connections.get(worker)
        if connection is None or not connection.alive:
            raise Unavailable(f"worker {worker} died while running model '{model}'; retry")
        return connection

    def answered(self, worker: int) -> None:
        self._silent.pop(worker, None)

    def unresponsive(self, worker: int) -> None:
        """A worker whose event loop does not answer (a model holding the GIL, a deadlock) is
        killed after a few missed reports; the usual restart follows."""
        self._silent[worker] = missed = self._silent.get(worker, 0) + 1
        process = self.slots[worker].process
        if missed >= HUNG_AFTER_REPORTS and process is not None and process.returncode is None:
            log.error(
                "worker %d (pid %d) has not answered for %d reports; killing it", worker, process.pid, missed
            )
            self._silent.pop(worker, None)
            process.kill()
