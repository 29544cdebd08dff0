"""Log lines for people (text) or for log pipelines (JSON, one object a line), uvicorn's included;
lines logged while a request is handled carry its id (the V2 `id`, else a generated one) and model.

The request path only sets a context variable (`begin_request` / `end_request`); ids are generated
when a request first logs something, so requests that log nothing pay nothing for them. A log line
holds the message and, for errors, the traceback: never request bodies or tensors, never settings.
"""

from __future__ import annotations

import logging
import sys
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
MAX_FIELD = 128  # request ids and model names come from clients: cut, and control characters replaced

# [model, request id or None]: a two-item list because it is made once per request (cheaper than
# an object) and the id is filled in later, once the body is decoded or when first needed.
_request: ContextVar[list[str | None] | None] = ContextVar("modelfleet_request", default=None)
_MODEL, _ID = 0, 1
_CONTROL = dict.fromkeys([*range(32), 127], "?")


def begin_request(model: str) -> Token[list[str | None] | None]:
    """The current context now handles a request for `model`; give the token to end_request."""
    return _request.set([model, None])


def end_request(token: Token[list[str | None] | None]) -> None:
    _request.reset(token)


def set_request_id(request_id: str) -> None:
    """The client's id for the request being handled (V2 `id`)."""
    context = _request.get()
    if context is not None:
        context[_ID] = request_id


def current_request() -> tuple[str, str] | None:
    """(model, request id) of the request being handled, generating its id if it has none."""
    context = _request.get()
    if context is None:
        return None
    if context[_ID] is None:
        context[_ID] = uuid.uuid4().hex
    return _clean(context[_MODEL]), _clean(context[_ID])


def _clean(value: str | None) -> str:
    return (value or "")[:MAX_FIELD].translate(_CONTROL)


class RequestFilter(logging.Filter):
    """Stamps `model` and `request_id` (None outside requests) on records, in the logging thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request()
        record.model, record.request_id = request if request is not None else (None, None)
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `(model=... request_id=...)` inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line += f" (model={getattr(record, 'model', '')} request_id={request_id})"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message; model and request_id
    inside a request; exception (the traceback) for errors. Nothing else from the record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            doc["model"] = getattr(record, "model", None)
            doc["request_id"] = request_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc).decode()


def configure_logging(level: str, log_format: str) -> logging.Handler:
    """One stderr handler on the root logger in `log_format` ("text" or "json"), which uvicorn's
    loggers use too (pass `log_config=None` to uvicorn so that it installs none of its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler
