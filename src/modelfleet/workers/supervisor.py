"""Starting, watching and restarting worker processes; reaping the whole tree at shutdown.

Each worker is spawned (`python -m modelfleet.workers.main`, never forked from a threaded
server) with one end of a socketpair as its only channel: no socket file, no port, nothing another
process could connect to. It runs in a session of its own, so that only the front decides when it
stops (after draining), and it dies with the front (PR_SET_PDEATHSIG, and EOF on its socket). A worker that dies is seen at once (EOF on that socket, then its exit
status), its slot goes `restarting`, and it is started again after a back-off that grows while it
keeps crashing soon after starting (a model that segfaults on load must not spin the CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from modelfleet.workers.plan import WorkerSpec

log = logging.getLogger(__name__)


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
