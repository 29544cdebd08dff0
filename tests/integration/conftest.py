"""The real app (data plane, engine, ONNX Runtime) behind an in-process ASGI client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from modelfleet.config import ServerSettings
from modelfleet.server.app import build_app


@pytest.fixture
async def client(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as c:
        yield c


class client_for:
    """`async with client_for(settings) as client`: app started, models loaded, then closed."""

    def __init__(self, settings: ServerSettings) -> None:
        self.app, self.plane = build_app(settings)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.plane.manager.start()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://modelfleet"
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.plane.manager.close()
