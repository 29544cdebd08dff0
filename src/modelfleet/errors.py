"""The one error root of modelfleet, carrying its HTTP status; transports map it once.

    ModelfleetError (500)
    ├── BadRequest (400)             malformed body, wrong datatype / shape / size, bad name
    ├── Unauthorized (401)           missing or wrong key
    ├── Forbidden (403)              known caller, not allowed: a tenant key or a remote client on control
    ├── NotFound (404)               unknown model or version (or another tenant's), unknown route
    ├── MethodNotAllowed (405)       a route asked with the wrong method; carries the Allow list
    ├── NotAcceptable (406)          Accept allows no answer type we can send (SageMaker contract)
    ├── RequestTimeout (408)         the body did not arrive within body_timeout_s
    ├── Conflict (409)               model already loaded (SageMaker contract)
    ├── PayloadTooLarge (413)        body or decompressed body over the configured limit
    ├── UnsupportedMediaType (415)   a body's Content-Type is none we read (SageMaker contract)
    ├── Overloaded (429)             per-model queue full; carries Retry-After seconds
    ├── InferenceFailed (500)        the runtime raised on valid input
    ├── Unavailable (503)            not ready, loading failed, draining, worker died
    ├── DeadlineExceeded (504)       the request's timeout passed before it was answered
    ├── InsufficientMemory (507)     a model does not fit the memory budget
    └── ModelLoadError (not sent)    raised inside a load; becomes the model's "unavailable" reason

Messages name the problem and leak no internal path, stack trace or process name.
"""

from __future__ import annotations

import re
from http import HTTPStatus

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s\"'/]+/)+([^\s\"']+)")


def without_paths(message: str) -> str:
    """A message from a framework or a user's model, fit for a client: every absolute path cut to
    its last part, so that no host layout leaks."""
    return _ABSOLUTE_PATH.sub(r"\1", message)


class ModelfleetError(Exception):
    """Root of every error that reaches a client. `status` is the HTTP status code."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(ModelfleetError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ModelfleetError):
    status = HTTPStatus.UNAUTHORIZED


class Forbidden(ModelfleetError):
    """The caller is known but may not do this (a tenant key on model control, a remote client
    on model control when no admin key is configured). Never for another tenant's model: that is
    NotFound, so that model names cannot be probed."""

    status = HTTPStatus.FORBIDDEN


class NotFound(ModelfleetError):
    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(ModelfleetError):
    status = HTTPStatus.METHOD_NOT_ALLOWED

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow  # the methods the route takes: the Allow header (RFC 9110)


class NotAcceptable(ModelfleetError):
    status = HTTPStatus.NOT_ACCEPTABLE


class RequestTimeout(ModelfleetError):
    status = HTTPStatus.REQUEST_TIMEOUT


class Conflict(ModelfleetError):
    status = HTTPStatus.CONFLICT


class PayloadTooLarge(ModelfleetError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(ModelfleetError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Overloaded(ModelfleetError):
    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InferenceFailed(ModelfleetError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR


class Unavailable(ModelfleetError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class DeadlineExceeded(ModelfleetError):
    status = HTTPStatus.GATEWAY_TIMEOUT


class InsufficientMemory(ModelfleetError):
    status = HTTPStatus.INSUFFICIENT_STORAGE


class ModelLoadError(ModelfleetError):
    """A model could not be loaded; the message becomes its 'unavailable' reason."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


def model_not_found(name: str, version: str | None = None) -> NotFound:
    if version is None:
        return NotFound(f"model '{name}' not found")
    return NotFound(f"model '{name}' (version '{version}') not found")
