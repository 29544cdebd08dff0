"""The infer sequence (server/inference.py) with a stand-in data plane: order, quota, accounting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelfleet.errors import BadRequest, ModelfleetError, NotFound, Overloaded
from modelfleet.server.asgi import ClientGone
from modelfleet.server.inference import INTERNAL, Inference
from modelfleet.server.quota import Quota, QuotaConfig
from tests.waiting import until


class Model:
    name = "m"

    def __init__(self, wait_ns: int = 0) -> None:
        self.wait_ns = wait_ns

    def expected_wait_ns(self) -> int:
        return self.wait_ns


class Req:
    def __init__(self, text: str) -> None:
        self.text, self.id = text, None


class Plane:
    def __init__(
        self, steps: list[str], model: Model | None = None, release: asyncio.Event | None = None
    ) -> None:
        self.steps, self._model, self._release = steps, model or Model(), release

    def resident(self, name: str, version: str | None) -> Model | None:
        return None  # never resident at once: every request asks `model` (a step to see)

    async def model(self, name: str, version: str | None) -> Model:
        self.steps.append("model")
        if name == "missing":
            raise NotFound(f"model '{name}' not found")
        return self._model

    async def infer(self, model: Model, request: Any, started_ns: int) -> str:
        self.steps.append("infer")
        if self._release is not None:
            await self._release.wait()
        if request.text == "boom":
            raise RuntimeError("a bug")
        return f"response to {request.text}"


def sequence(steps: list[str], **plane: Any) -> tuple[Inference, list[tuple[str, int]]]:
    answers: list[tuple[str, int]] = []
    inference = Inference(Plane(steps, **plane), lambda name, status, model: answers.append((name, status)))  # type: ignore[arg-type]
    return inference, answers


def steps_of(steps: list[str], body: str = "body") -> dict[str, Any]:
    async def read() -> str:
        steps.append("read")
        return body

    async def decode(got: str, model: Model) -> Req:
        steps.append("decode")
        if got == "bad":
            raise BadRequest("bad tensor")
        return Req(got)

    async def encode(response: str, request: Req) -> str:
        steps.append("encode")
        return response.upper()

    return {"read": read, "decode": decode, "encode": encode}


async def test_the_steps_run_in_order_and_the_answer_is_counted() -> None:
    steps: list[str] = []
    inference, answers = sequence(steps)
    quota = Quota("acme", QuotaConfig(max_concurrent=1))
    answer = await inference.run("m", None, 0, admit=lambda: quota, **steps_of(steps))
    assert answer == "RESPONSE TO BODY"
    assert steps == ["read", "model", "decode", "infer", "encode"]
    assert answers == [("m", 200)] and quota.in_flight == 0


@pytest.mark.parametrize(("name", "body", "status"), [("missing", "body", 404), ("m", "bad", 400)])
async def test_errors_are_counted_raised_and_give_the_quota_back(name: str, body: str, status: int) -> None:
    steps: list[str] = []
    inference, answers = sequence(steps)
    quota = Quota("acme", QuotaConfig(max_concurrent=1))
    with pytest.raises(ModelfleetError) as raised:
        await inference.run(name, None, 0, admit=lambda: quota, **steps_of(steps, body))
    assert raised.value.status == status
    assert answers == [(name, status)] and quota.in_flight == 0


async def test_past_the_quota_nothing_is_read_and_the_connection_is_held() -> None:
    steps: list[str] = []
    inference, answers = sequence(steps)
    quota = Quota("acme", QuotaConfig(max_concurrent=1))
    quota.enter()
    held: list[str] = []

    def hold() -> Any:
        held.append("held")
        return lambda: True

    with pytest.raises(Overloaded):
        await inference.run("m", None, 0, admit=lambda: quota, hold=hold, **steps_of(steps))
    assert steps == [] and held == ["held"] and quota.held == 1
    assert answers == [("m", 429)] and quota.in_flight == 1  # the other request's place only


async def test_a_bug_is_a_counted_500_without_internals() -> None:
    steps: list[str] = []
    inference, answers = sequence(steps)
    with pytest.raises(ModelfleetError) as raised:
        await inference.run("m", None, 0, **steps_of(steps, "boom"))
    assert raised.value is INTERNAL and str(raised.value) == "internal server error"
    assert answers == [("m", 500)]


async def test_a_client_that_leaves_a_long_queue_drops_its_request() -> None:
    steps: list[str] = []
    release = asyncio.Event()
    inference, answers = sequence(steps, model=Model(wait_ns=10**9), release=release)
    gone = asyncio.Event()

    async def leaving(task: asyncio.Task[Any]) -> None:
        await gone.wait()
        task.cancel()

    run = asyncio.ensure_future(inference.run("m", None, 0, leaving=leaving, **steps_of(steps)))
    await until(lambda: "infer" in steps, "the request waits in the queue")
    gone.set()
    with pytest.raises(ClientGone):
        await run
    assert answers == []  # nobody to answer, nothing counted
