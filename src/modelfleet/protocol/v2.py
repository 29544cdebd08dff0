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


_INT64_MAX = 2**63 - 1


def _is_count(value: object) -> bool:
    """A non-negative integer that fits the protocol's int64 (gRPC's int64_param)."""
    return _is_int(value) and 0 <= value <= _INT64_MAX  # type: ignore[operator]


# Reserved request parameters and the check each value must pass; others are passed through.
_RESERVED: dict[str, tuple[str, Any]] = {
    "binary_data_output": ("a boolean", lambda v: isinstance(v, bool)),
    "timeout": ("a non-negative 64-bit integer (microseconds)", _is_count),
    "priority": ("a non-negative 64-bit integer", _is_count),
    "sequence_id": ("an integer or a string", lambda v: _is_int(v) or isinstance(v, str)),
    "sequence_start": ("a boolean", lambda v: isinstance(v, bool)),
    "sequence_end": ("a boolean", lambda v: isinstance(v, bool)),
}
_RESERVED_TENSOR: dict[str, tuple[str, Any]] = {
    "binary_data": ("a boolean", lambda v: isinstance(v, bool)),
    "binary_data_size": ("a non-negative 64-bit integer", _is_count),
    "classification": ("a non-negative 64-bit integer", _is_count),
}


def check_parameters(params: Parameters, where: str, tensor: bool = False, depth: int = 64) -> None:
    """400 when a reserved parameter has the wrong type or a value nests JSON deeper than `depth`
    levels; unknown parameters are left alone."""
    if not params:
        return
    table = _RESERVED_TENSOR if tensor else _RESERVED
    nested = depth < 1  # scalar values only (the usual case) nest one level: no walk needed
    for key, value in params.items():
        rule = table.get(key)
        if rule is not None and not rule[1](value):
            raise BadRequest(f"{where}: parameter '{key}' must be {rule[0]}, got {_shown(value)}")
        if not nested and isinstance(value, (dict, list)):
            nested = True
    if nested:
        check_depth(params, depth, f"{where}: parameters")


def check_depth(value: Any, limit: int, where: str) -> None:
    """400 when a decoded JSON value nests objects and arrays deeper than `limit` levels (the
    value itself is level 1). Iterative: no recursion for a client to exhaust."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > limit:
            raise BadRequest(f"{where} nest deeper than {limit} levels")
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:32]}... ({len(text)} characters)"
