"""What `modelfleet top` shows, as plain data: a server's `Snapshot` (its models, workers and totals)
and the `Rates` between two snapshots. Every field is optional (None, shown as a dash)."""

from __future__ import annotations

from dataclasses import dataclass, field

IN_PROCESS = "server"  # the one "worker" of a server that runs models in its own process
FRONT = "front"  # the HTTP front of a server with worker processes


class SourceError(Exception):
    """The server could not be read; the message is what the status line shows."""


# -- plain data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One resident model version."""

    name: str
    version: str
    state: str | None = None
    workers: tuple[str, ...] = ()
    resident_bytes: int | None = None
    requests: int | None = None  # answers by its resident copies (starts again from 0 on reload)
    in_flight: int | None = None
    last_used: float | None = None  # wall clock, seconds since the epoch
    pinned: bool | None = None
    loads: int | None = None
    evictions: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)


@dataclass(frozen=True)
class Worker:
    """A worker process (or, in-process, the server itself; or the front of a worker pool)."""

    key: str
    pid: int | None = None
    device: str | None = None
    state: str | None = None
    restarts: int | None = None
    budget_bytes: int | None = None
    used_bytes: int | None = None
    rss_bytes: int | None = None
    cpu_seconds: float | None = None
    in_flight: int | None = None
    models: int | None = None


@dataclass(frozen=True)
class Totals:
    """Server-wide counts: monotonic counters (for rates) and the memory gauges."""

    requests: float | None = None  # every answer to an inference request
    loads: float | None = None
    evictions: float | None = None
    cold_starts: float | None = None
    resident_models: int | None = None
    known_models: int | None = None
    budget_bytes: int | None = None
    used_bytes: int | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # monotonic seconds, for rates
    wall_time: float  # seconds since the epoch, for "last use" and uptime
    server: str | None = None
    version: str | None = None
    started_at: float | None = None  # the server process's start, seconds since the epoch
    worker_processes: bool = False  # /v2/workers answered: the server runs worker processes
    workers: tuple[Worker, ...] = ()
    models: tuple[ModelRow, ...] = ()
    totals: Totals = field(default_factory=Totals)
    notes: tuple[str, ...] = ()  # things worth a word in the status line (a refused endpoint)


@dataclass(frozen=True)
class Rates:
    """Per second, between two snapshots; empty after the first one."""

    interval_s: float = 0.0
    requests_per_s: dict[tuple[str, str], float] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)  # 100 = one core busy
    total_requests_per_s: float | None = None
    loads_per_s: float | None = None
    evictions_per_s: float | None = None
    cold_starts_per_s: float | None = None
