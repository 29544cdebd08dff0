"""The gRPC transport's one status table: every error of the tree maps to the intended code."""

from __future__ import annotations

import grpc
import pytest

from modelfleet import errors
from modelfleet.server.grpc import STATUS_CODES, status_code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.MethodNotAllowed, grpc.StatusCode.UNIMPLEMENTED),
        (errors.Conflict, grpc.StatusCode.ALREADY_EXISTS),
        (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.InferenceFailed, grpc.StatusCode.INTERNAL),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.InsufficientMemory, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ModelfleetError, grpc.StatusCode.INTERNAL),
    ],
)
def test_error_codes(error: type[errors.ModelfleetError], code: grpc.StatusCode) -> None:
    assert status_code(error.status) == code


def test_every_error_status_is_in_the_table() -> None:
    statuses = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ModelfleetError)
    }
    assert statuses <= STATUS_CODES.keys()
    assert status_code(501) == grpc.StatusCode.UNIMPLEMENTED
    assert status_code(418) == grpc.StatusCode.INTERNAL  # anything unforeseen
