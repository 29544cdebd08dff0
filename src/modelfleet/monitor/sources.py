"""What `modelfleet top` reads from a server: four answers (/v2, /v2/models/stats, /metrics,
/v2/workers) fetched together into a `Snapshot` (parse.py makes it, snapshot.py holds it). Only
`Source.fetch` does I/O; the monitor keeps working against older or newer servers, and against a
server without worker processes (/v2/workers 404) or without /metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from modelfleet.monitor.parse import (
    MetricsView,
    WorkerModel,
    assemble,
    parse_metrics,
    parse_stats,
    parse_workers,
    rates,
)
from modelfleet.monitor.snapshot import (
    FRONT,
    IN_PROCESS,
    ModelRow,
    Rates,
    Snapshot,
    SourceError,
    Totals,
    Worker,
)

# the names the monitor's views, app and tests read from here
__all__ = [
    "FRONT",
    "IN_PROCESS",
    "MetricsView",
    "ModelRow",
    "Rates",
    "Snapshot",
    "Source",
    "SourceError",
    "Totals",
    "Worker",
    "WorkerModel",
    "assemble",
    "parse_metrics",
    "parse_stats",
    "parse_workers",
    "rates",
]

ERROR_CHARS = 200  # how much of a server's error message the status line shows


def _worker_processes(answer: httpx.Response) -> Any | None:
    """The /v2/workers document when the server runs worker processes; None without them (404
    from older servers, or the server listing itself as worker 0 with `in_process`)."""
    if answer.status_code != 200:
        return None
    doc = _json(answer)
    return None if isinstance(doc, dict) and doc.get("in_process") is True else doc


# -- fetching --------------------------------------------------------------------------------------------------


class Source:
    """Reads one server through an httpx client whose base_url is the server (any transport: the
    tests hand it an in-process ASGI one). Each `fetch` makes four requests at once."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._clock = clock
        self._wall = wall

    @property
    def url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    async def fetch(self) -> Snapshot:
        """One snapshot; raises SourceError with a message for the status line."""
        answers = await asyncio.gather(
            self._get("/v2"),
            self._get("/v2/models/stats"),
            self._get("/metrics"),
            self._get("/v2/workers"),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        server, stats, metrics, workers = (a for a in answers if isinstance(a, httpx.Response))
        notes = []
        if workers.status_code != 200 and workers.status_code != 404:
            notes.append(f"/v2/workers answered {workers.status_code}")
        if metrics.status_code != 200:
            notes.append(f"/metrics answered {metrics.status_code}: no CPU or process memory")
        return assemble(
            taken_at=self._clock(),
            wall_time=self._wall(),
            server=_json(server) if server.status_code == 200 else None,
            stats=_json(_ok(stats)),
            metrics=parse_metrics(metrics.text) if metrics.status_code == 200 else None,
            workers=_worker_processes(workers),
            notes=tuple(notes),
        )

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self._client.get(path)
        except httpx.TimeoutException:
            timeout = self._client.timeout.read
            raise SourceError(f"no answer from {self.url} within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code != 200:
        message = response.text
        try:
            doc = response.json()
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                message = doc["error"]
        except ValueError:
            pass
        path = response.request.url.path
        raise SourceError(f"GET {path} answered {response.status_code}: {message[:ERROR_CHARS]}")
    return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise SourceError(f"GET {response.request.url.path}: the answer is not JSON") from None
