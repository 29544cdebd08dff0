"""Transport-neutral V2 (Open Inference Protocol) objects: what the data plane takes and returns.

Transports decode their wire format into these (tensors as shaped numpy arrays) and encode the
answers back; nothing here knows about HTTP or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfleet.errors import BadRequest

Parameters = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared tensor: V2 datatype and full shape (-1 for a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # already shaped; object array of bytes for BYTES
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None  # None: every output of the model
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)

    @property
    def timeout_us(self) -> int | None:
        value = self.parameters.get("timeout")
        return None if value is None else int(value)

    @property
    def priority(self) -> int:
        return int(self.parameters.get("priority", 0))


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Reserved request parameters and the check each value must pass; others are passed through.
_RESERVED: dict[str, tuple[str, Any]] = {
    "binary_data_output": ("a boolean", lambda v: isinstance(v, bool)),
    "timeout": ("a non-negative integer (microseconds)", lambda v: _is_int(v) and v >= 0),
    "priority": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "sequence_id": ("an integer or a string", lambda v: _is_int(v) or isinstance(v, str)),
    "sequence_start": ("a boolean", lambda v: isinstance(v, bool)),
    "sequence_end": ("a boolean", lambda v: isinstance(v, bool)),
}
_RESERVED_TENSOR: dict[str, tuple[str, Any]] = {
    "binary_data": ("a boolean", lambda v: isinstance(v, bool)),
    "binary_data_size": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "classification": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
}


def check_parameters(params: Parameters, where: str, tensor: bool = False) -> None:
    """400 when a reserved parameter has the wrong type; unknown parameters are left alone."""
    if not params:
        return
    table = _RESERVED_TENSOR if tensor else _RESERVED
    for key in params.keys() & table.keys():
        expected, ok = table[key]
        if not ok(params[key]):
            raise BadRequest(f"{where}: parameter '{key}' must be {expected}, got {params[key]!r}")
