"""`modelfleet top` headless (textual's pilot): against the real in-process app while it serves, against
a port where nothing listens, and against a server with worker processes (/v2/workers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from modelfleet.config import ServerSettings
from modelfleet.monitor.app import TopApp
from modelfleet.monitor.sources import IN_PROCESS, Source
from modelfleet.monitor.view import MODEL_COLUMNS, WORKER_COLUMNS, SortKey
from tests.integration.conftest import client_for

INTERVAL_S = 0.05
BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def table(app: TopApp, which: str) -> dict[str, dict[str, str]]:
    """The rows of a table on screen, by their first cell, as {column: text}."""
    widget = app.query_one(f"#{which}", DataTable)
    columns = WORKER_COLUMNS if which == "workers" else MODEL_COLUMNS
    rows = {}
    for i in range(widget.row_count):
        cells = [str(c) for c in widget.get_row_at(i)]
        rows[cells[0]] = dict(zip(columns, cells, strict=True))
    return rows


def text(app: TopApp, which: str) -> str:
    return str(app.query_one(f"#{which}", Static).content)


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "the screen never showed what the test waits for"
        await pilot.pause(INTERVAL_S)


def req_s(app: TopApp, model: str) -> float:
    row = table(app, "models").get(model)
    return float(row["Req/s"]) if row and row["Req/s"] not in ("\u2013", "") else 0.0


async def test_in_process_server_while_it_serves(settings: ServerSettings) -> None:
    async with client_for(settings) as client:
        app = TopApp(Source(client), interval_s=INTERVAL_S)

        async with app.run_test(size=(160, 40)) as pilot:

            async def traffic() -> None:
                """A request in every interval between two polls: each poll sees new traffic."""
                while True:
                    polls = app.polls
                    assert (await client.post("/v2/models/identity/infer", json=BODY)).status_code == 200
                    await until(pilot, lambda seen=polls: app.polls > seen)

            sender = asyncio.create_task(traffic())
            try:
                await until(pilot, lambda: req_s(app, "identity") > 0)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            identity = table(app, "models")["identity"]
            assert identity["Worker"] == IN_PROCESS and identity["State"] == "READY"
            assert identity["Resident"].endswith(("B", "KiB", "MiB"))
            assert identity["Pinned"] == "no" and identity["Last use"] in ("now", "1s ago")
            server = table(app, "workers")[IN_PROCESS]
            assert " / " in server["Memory (used / budget)"]  # used and budget, with a bar
            assert server["RSS"].endswith(("MiB", "GiB")) and server["Models"] != "\u2013"
            first, second = text(app, "header").splitlines()
            assert first.startswith("modelfleet 0.1.0 at http://modelfleet") and "in-process" in first
            assert "req/s" in first and "known" in second and "loads" in second
            assert "live" in text(app, "status")

            await pilot.press("s")
            assert app.sort_key is SortKey.SIZE and "models by size" in text(app, "status")
            await pilot.press("p")
            assert app.paused and text(app, "status").startswith("PAUSED")
            polls = app.polls
            shown = table(app, "models")
            await until(pilot, lambda: app.polls >= polls + 3)
            assert table(app, "models") == shown  # frozen while paused, though polling goes on
            await pilot.press("p")
            assert not app.paused
            await pilot.press("q")
        assert app.return_code == 0
        assert (await client.get("/v2/health/live")).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_is_a_status_line_and_retried() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(base_url=url, timeout=0.5) as client:
        app = TopApp(Source(client), interval_s=INTERVAL_S)
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.polls >= 3)
            status = text(app, "status")
            assert status.startswith(f"cannot reach {url}") and "retrying every 0.05 s" in status
            assert app.query_one("#status").has_class("error")
            assert table(app, "models") == {} and app.is_running
            await pilot.press("q")


# -- a server with worker processes: a small app serving the documented /v2/workers shape ---------------


class Fleet:
    """Two workers whose counters move by the same step at each poll (each endpoint counts its own
    calls, whatever order a poll's requests arrive in); `down` makes every request fail to connect."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.down = False

    def called(self, endpoint: str) -> int:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        return self.calls[endpoint]

    def workers(self) -> dict[str, Any]:
        polls = self.called("workers")
        return {
            "workers": [
                {
                    "id": 0,
                    "pid": 4242,
                    "device": "cuda:0",
                    "state": "ready",
                    "restarts": 1,
                    "budget_bytes": 8 << 30,
                    "used_bytes": 2 << 30,
                    "rss_bytes": 3 << 30,
                    "cpu_seconds": 0.5 * polls,  # half a core busy at one poll per second of clock
                    "in_flight": 5,
                    "models": [
                        {"name": "resnet", "version": "1", "resident_bytes": 100 << 20, "in_flight": 5},
                        {"name": "bert", "version": "2", "resident_bytes": 400 << 20, "in_flight": 0},
                    ],
                },
                {"id": 1, "device": "cuda:1", "state": "restarting", "restarts": 3, "models": []},
            ]
        }

    def stats(self) -> dict[str, Any]:
        count = 10 * self.called("stats")
        return {
            "model_stats": [
                {"name": "resnet", "version": "1", "inference_stats": {"success": {"count": count}}},
                {"name": "bert", "version": "2", "inference_stats": {"success": {"count": 0}}},
            ],
            "memory": {
                "budget_bytes": 16 << 30,
                "used_bytes": 2 << 30,
                "resident_models": 2,
                "known_models": 9,
            },
        }

    def collect(self) -> Any:
        requests = CounterMetricFamily("modelfleet_requests", "", labels=["model", "status_class"])
        requests.add_metric(["resnet", "2xx"], 10 * self.called("metrics"))
        yield requests
        yield CounterMetricFamily("modelfleet_model_loads", "", labels=["model"])
        yield GaugeMetricFamily("modelfleet_process_resident_memory_bytes", "", value=64 << 20)

    def app(self) -> Starlette:
        registry = CollectorRegistry()
        fleet = self

        class Families(Collector):
            def collect(self) -> Any:
                return fleet.collect()

        registry.register(Families())

        async def server(request: Request) -> Response:
            return JSONResponse({"name": "modelfleet", "version": "9.9.9"})

        async def stats(request: Request) -> Response:
            return JSONResponse(self.stats())

        async def workers(request: Request) -> Response:
            return JSONResponse(self.workers())

        async def metrics(request: Request) -> Response:
            return PlainTextResponse(generate_latest(registry).decode())

        return Starlette(
            routes=[
                Route("/v2", server),
                Route("/v2/models/stats", stats),
                Route("/v2/workers", workers),
                Route("/metrics", metrics),
            ]
        )


class Switchable(httpx.AsyncBaseTransport):
    """The ASGI transport, or a refused connection while the fleet is down."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.inner = httpx.ASGITransport(app=fleet.app())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.fleet.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return await self.inner.handle_async_request(request)


@contextlib.asynccontextmanager
async def fleet_client(fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Switchable(fleet), base_url="http://fleet") as client:
        yield client


async def test_worker_processes_from_v2_workers() -> None:
    fleet = Fleet()
    clock = iter(range(1000))  # one second between polls, whatever the real pace
    async with fleet_client(fleet) as client:
        app = TopApp(Source(client, clock=lambda: float(next(clock))), interval_s=INTERVAL_S)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: "resnet" in table(app, "models") and app.polls >= 2, timeout_s=5)
            workers = table(app, "workers")
            assert list(workers) == ["0", "1", "front"]
            gpu = workers["0"]
            assert (gpu["Device"], gpu["State"], gpu["PID"], gpu["Restarts"]) == (
                "cuda:0",
                "ready",
                "4242",
                "1",
            )
            assert gpu["CPU %"] == "50" and gpu["Models"] == "2" and gpu["In flight"] == "5"
            assert gpu["Memory (used / budget)"].endswith("2.00 GiB / 8.00 GiB")
            assert workers["1"]["State"] == "restarting" and workers["1"]["CPU %"] == "\u2013"
            assert workers["front"]["RSS"] == "64.0 MiB"
            models = table(app, "models")
            assert list(models) == ["resnet", "bert"]  # busiest first
            assert models["resnet"]["Req/s"] == "10.0" and models["resnet"]["Worker"] == "0"
            assert models["resnet"]["In flight"] == "5" and models["bert"]["Resident"] == "400.0 MiB"
            assert "9.9.9" in text(app, "header") and "2 workers" in text(app, "header")
            assert "10.0 req/s" in text(app, "header")

            fleet.down = True
            await until(pilot, lambda: text(app, "status").startswith("cannot reach http://fleet"))
            assert "figures below are" in text(app, "status")
            assert "resnet" in table(app, "models")  # the last figures stay on screen
            fleet.down = False
            await until(pilot, lambda: text(app, "status").startswith("live"))
            await pilot.press("q")
