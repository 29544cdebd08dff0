"""server/http1.py's write path: a response's head goes out with its body, in one write."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from modelfleet.server.http1 import _JOIN_BYTES, _Writes


class Recorder:
    """A transport that records what it is asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, lines: Any) -> None:
        self.calls.append(("writelines", list(lines)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def cycle(method: str = "POST", length: int = 4, chunked: bool | None = False) -> SimpleNamespace:
    """A request cycle (uvicorn's RequestResponseCycle's fields) whose response head is being sent."""
    return SimpleNamespace(
        response_started=True,
        response_complete=False,
        chunked_encoding=chunked,
        expected_content_length=length,
        scope={"method": method},
    )


def writes(current: SimpleNamespace | None) -> tuple[_Writes, Recorder]:
    transport = Recorder()
    return _Writes(transport, SimpleNamespace(cycle=current)), transport  # type: ignore[arg-type]


def test_the_head_waits_for_the_body_and_both_go_in_one_write() -> None:
    current = cycle()
    out, transport = writes(current)
    out.write(b"HEAD")
    assert transport.calls == []
    current.expected_content_length = 0
    out.write(b"body")
    assert transport.calls == [("write", b"HEADbody")]
    out.write(b"more")  # not a head: straight through
    assert transport.calls[-1] == ("write", b"more")


def test_a_large_body_goes_with_its_head_in_one_writev_without_a_copy() -> None:
    out, transport = writes(cycle(length=_JOIN_BYTES + 1))
    body = b"x" * (_JOIN_BYTES + 1)
    out.write(b"HEAD")
    out.write(body)
    assert transport.calls == [("writelines", [b"HEAD", body])]


def test_heads_without_a_body_to_follow_are_not_held() -> None:
    for current in (
        cycle(method="HEAD"),
        cycle(length=0),
        cycle(chunked=True),
        None,
        SimpleNamespace(response_started=False),  # e.g. "100 Continue" before the response
    ):
        out, transport = writes(current)  # type: ignore[arg-type]
        out.write(b"HEAD")
        assert transport.calls == [("write", b"HEAD")]


def test_a_streamed_body_is_not_held_after_its_first_write() -> None:
    current = cycle(length=12)
    out, transport = writes(current)
    out.write(b"HEAD")
    current.expected_content_length = 8
    out.write(b"part")
    out.write(b"part")
    assert transport.calls == [("write", b"HEADpart"), ("write", b"part")]


def test_close_sends_a_held_head_first_and_abort_drops_it() -> None:
    out, transport = writes(cycle())
    out.write(b"HEAD")
    out.close()
    assert transport.calls == [("write", b"HEAD"), ("close", None)]
    out, transport = writes(cycle())
    out.write(b"HEAD")
    out.abort()
    assert transport.calls == [("abort", None)]


def test_everything_else_is_the_transport_s() -> None:
    out, _ = writes(None)
    assert out.get_extra_info("peername") == "info:peername"
    assert out.is_closing() is False
