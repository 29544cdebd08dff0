"""Log formats: JSON lines with the request in play, text for people, uvicorn's loggers routed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from modelfleet.server.logs import (
    MAX_FIELD,
    JsonFormatter,
    RequestFilter,
    TextFormatter,
    begin_request,
    configure_logging,
    current_request,
    end_request,
    set_request_id,
)


def emit(formatter: logging.Formatter, message: str, *args: object, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestFilter())
    logger = logging.Logger("modelfleet.test")  # not registered: touches no global logging state
    logger.addHandler(handler)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception(message, *args)
    else:
        logger.warning(message, *args)
    return stream.getvalue()


def test_json_lines_hold_time_level_logger_and_message_only() -> None:
    doc = json.loads(emit(JsonFormatter(), "model '%s' ready", "bert"))
    assert set(doc) == {"time", "level", "logger", "message"}
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "modelfleet.test"
    assert doc["message"] == "model 'bert' ready"
    assert doc["time"].endswith("+00:00")


def test_json_lines_inside_a_request_carry_its_id_and_model() -> None:
    token = begin_request("bert")
    try:
        set_request_id("req-42")
        doc = json.loads(emit(JsonFormatter(), "slow"))
    finally:
        end_request(token)
    assert (doc["model"], doc["request_id"]) == ("bert", "req-42")
    assert current_request() is None
    assert "request_id" not in json.loads(emit(JsonFormatter(), "after"))


def test_a_request_without_an_id_gets_one_kept_for_all_its_lines() -> None:
    token = begin_request("bert")
    try:
        first = json.loads(emit(JsonFormatter(), "one"))
        second = json.loads(emit(JsonFormatter(), "two"))
    finally:
        end_request(token)
    assert len(first["request_id"]) == 32
    assert first["request_id"] == second["request_id"]
    token = begin_request("bert")
    try:
        other = json.loads(emit(JsonFormatter(), "three"))
    finally:
        end_request(token)
    assert other["request_id"] != first["request_id"]


def test_client_given_values_are_cut_and_cannot_forge_lines() -> None:
    token = begin_request("bert")
    try:
        set_request_id("x\nINFO forged line\r" + "y" * 1000)
        text = emit(TextFormatter(), "hello")
        doc = json.loads(emit(JsonFormatter(), "hello"))
    finally:
        end_request(token)
    assert text.count("\n") == 1
    assert "x?INFO forged line?" in text
    assert len(doc["request_id"]) == MAX_FIELD


def test_json_errors_carry_the_traceback_in_one_line() -> None:
    line = emit(JsonFormatter(), "failed", exc=True)
    assert line.count("\n") == 1
    doc = json.loads(line)
    assert doc["level"] == "ERROR"
    assert "ValueError: boom" in doc["exception"]


def test_text_lines_for_people() -> None:
    line = emit(TextFormatter(), "model '%s' ready", "bert")
    assert line.rstrip().endswith("WARNING modelfleet.test: model 'bert' ready")
    token = begin_request("bert")
    try:
        set_request_id("r1")
        assert emit(TextFormatter(), "slow").rstrip().endswith("slow (model=bert request_id=r1)")
    finally:
        end_request(token)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    level = logging.getLogger().level
    yield
    for n, (handlers, propagate) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).propagate = propagate
    logging.getLogger().setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_sends_uvicorn_through_the_same_json_handler() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.NullHandler())  # as uvicorn's own config would
    handler = configure_logging("info", "json")
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    uvicorn_error.info("Started server process [%d]", 7)
    logging.getLogger("modelfleet.server").debug("below the level")
    doc = json.loads(stream.getvalue())
    assert (doc["logger"], doc["message"]) == ("uvicorn.error", "Started server process [7]")
    assert uvicorn_error.handlers == []
    assert logging.getLogger().handlers == [handler]
