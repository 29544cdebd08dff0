"""The V2 REST wire format: JSON tensors and the binary tensor data extension, both directions.

A request body is a JSON header, optionally followed by raw tensor bytes; the header's length is
`Inference-Header-Content-Length`, and each binary input says its size in
`parameters.binary_data_size`, in input order. Binary inputs become numpy views of the body (no
copy). Every malformed case is a BadRequest naming the field and the expected value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np
import orjson

from modelfleet.errors import BadRequest
from modelfleet.protocol.datatypes import Datatype, datatype, deserialize_bytes, serialize_bytes
from modelfleet.protocol.v2 import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    check_depth,
    check_parameters,
)

if TYPE_CHECKING:
    from modelfleet.config import ServerSettings

HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps checked before anything is allocated. `max_elements` bounds every dimension too (a
    shape like [0, 2^63-1] holds no element but no array of it can be made); `max_json_depth`
    bounds the nesting of JSON values (parameters, BYTES data)."""

    max_inputs: int = 64
    max_rank: int = 16
    max_elements: int = 1 << 28
    max_json_depth: int = 64

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Limits:
        return cls(
            settings.max_inputs,
            settings.max_tensor_rank,
            settings.max_tensor_elements,
            settings.max_json_depth,
        )


class _Tensor(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # decoded per tensor: _json_data


class _Output(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    parameters: dict[str, Any] = {}


class _Request(msgspec.Struct):
    inputs: list[_Tensor]
    outputs: list[_Output] | None = None
    id: str | None = None
    parameters: dict[str, Any] = {}


_DECODER = msgspec.json.Decoder(_Request)


def header_length(value: str | None, body_length: int) -> int | None:
    """Parse Inference-Header-Content-Length (None when absent); 400 when it cannot be right."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # str.isdigit() alone takes '³' and '٣'; int() not
        raise BadRequest(
            f"Inference-Header-Content-Length must be a non-negative integer, got '{value[:32]}'"
        )
    length = int(text)
    if length > body_length:
        raise BadRequest(
            f"Inference-Header-Content-Length is {length} but the body has only {body_length} bytes"
        )
    return length


def decode_request(body: bytes, json_length: int | None, limits: Limits) -> InferRequest:
    """Body (JSON header + binary tail) -> InferRequest with shaped numpy arrays."""
    header = body if json_length is None else memoryview(body)[:json_length]
    try:
        raw = _DECODER.decode(header)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"request body nests deeper than {limits.max_json_depth} levels") from None
    if len(raw.inputs) > limits.max_inputs:
        raise BadRequest(f"request has {len(raw.inputs)} inputs, the limit is {limits.max_inputs}")
    if raw.outputs is not None and len(raw.outputs) > limits.max_inputs:
        raise BadRequest(f"request asks for {len(raw.outputs)} outputs, the limit is {limits.max_inputs}")
    check_parameters(raw.parameters, "request", depth=limits.max_json_depth)
    binary = memoryview(body)[json_length:] if json_length is not None else memoryview(b"")
    offset = 0
    inputs = []
    for tensor in raw.inputs:
        where = f"input '{tensor.name}'"
        check_parameters(tensor.parameters, where, tensor=True, depth=limits.max_json_depth)
        dt = datatype(tensor.datatype)
        shape = checked_shape(tensor.shape, where, limits)
        count = math.prod(shape)
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if tensor.data is not msgspec.UNSET:
                raise BadRequest(f"{where}: give either 'data' or parameter 'binary_data_size', not both")
            if offset + size > len(binary):
                raise BadRequest(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes left)"
                )
            array = _from_binary(binary[offset : offset + size], dt, shape, count, where)
            offset += size
        elif tensor.data is msgspec.UNSET:
            raise BadRequest(f"{where}: no 'data' and no 'binary_data_size' parameter")
        else:
            array = _json_data(tensor.data, dt, shape, count, where, limits.max_json_depth)
        inputs.append(InferInput(tensor.name, dt.name, shape, array, tensor.parameters))
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary)} bytes of binary data after the JSON header, "
            f"but the inputs' binary_data_size add up to {offset}"
        )
    outputs = None
    if raw.outputs is not None:
        outputs = []
        for out in raw.outputs:
            check_parameters(out.parameters, f"output '{out.name}'", tensor=True, depth=limits.max_json_depth)
            outputs.append(RequestedOutput(out.name, out.parameters))
    return InferRequest(inputs, outputs, raw.id, raw.parameters)


def checked_shape(shape: list[int], where: str, limits: Limits) -> tuple[int, ...]:
    """Rank, sign, size of each dimension and element count against the limits (shared with the
    gRPC codec), before anything is allocated."""
    if len(shape) > limits.max_rank:
        raise BadRequest(f"{where}: shape has {len(shape)} dimensions, the limit is {limits.max_rank}")
    for dim in shape:
        if dim < 0:
            raise BadRequest(f"{where}: shape {_short(shape)} has a negative dimension")
        if dim > limits.max_elements:
            raise BadRequest(
                f"{where}: shape {_short(shape)} has a dimension over the limit of {limits.max_elements} elements"
            )
    count = math.prod(shape)
    if count > limits.max_elements:
        raise BadRequest(f"{where}: shape {shape} holds {count} elements, the limit is {limits.max_elements}")
    # What numpy's strides must address, zeros aside: more than `count` only when a dimension is 0.
    span = math.prod(max(dim, 1) for dim in shape) if count == 0 else count
    if span > limits.max_elements:
        raise BadRequest(
            f"{where}: shape {shape} holds no element, but its other dimensions span {span}, "
            f"over the limit of {limits.max_elements} elements"
        )
    return tuple(shape)


def _short(shape: list[int]) -> str:
    """A shape for a message: dimensions past 20 digits are cut (a client may send 10^1000)."""
    return (
        "["
        + ", ".join(str(d) if abs(d) < 10**20 else f"{str(d)[:8]}...({len(str(d))} digits)" for d in shape)
        + "]"
    )


def _from_binary(raw: memoryview, dt: Datatype, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
    if dt.is_bytes:
        return deserialize_bytes(raw, count, where).reshape(shape)
    expected = count * dt.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"{where}: binary_data_size is {len(raw)} bytes, but shape {list(shape)} of {dt.name} "
            f"needs {expected} bytes"
        )
    return np.ndarray(shape, dt.dtype, raw)  # a view of the body, as frombuffer + reshape (one call)


JSON_CHUNK_BYTES = 1 << 20  # a large flat JSON array is read this much at a time


def _json_data(
    raw: msgspec.Raw, dt: Datatype, shape: tuple[int, ...], count: int, where: str, max_depth: int
) -> np.ndarray:
    """A tensor's JSON `data`. A large array of numbers, flat or nested as its shape, is read a
    chunk at a time: each chunk is one short call that holds the GIL, so on a decoding thread the
    event loop runs between chunks (a 64 MiB body is ~16 M numbers: one call would stall the loop
    for seconds)."""
    body = raw if len(raw) <= JSON_CHUNK_BYTES or not dt.json_kinds else bytes(raw).strip()
    if body is not raw and body.startswith(b"[") and b'"' not in body:
        if body.count(b"[") == 1:
            return _flat_chunks(body, dt, shape, count, where, max_depth)
        compact = body.translate(None, b" \t\r\n")
        if len(shape) >= 2 and compact.startswith(b"[" * len(shape)) and compact[len(shape)] != ord("["):
            return _row_chunks(compact, dt, shape, count, where, max_depth)
    try:  # small, irregular or not numbers: the whole value at once (its checks name the problem)
        data = msgspec.json.decode(body)
    except RecursionError:
        raise BadRequest(f"{where}: data nests deeper than {max_depth} levels") from None
    return _from_json(data, dt, shape, count, where, max_depth)


def _flat_chunks(
    body: bytes, dt: Datatype, shape: tuple[int, ...], count: int, where: str, max_depth: int
) -> np.ndarray:
    """A flat array of numbers, ~JSON_CHUNK_BYTES per decode, cut at commas."""
    parts: list[np.ndarray] = []
    start, end = 1, len(body) - 1
    while start < end:
        cut = body.find(b",", min(start + JSON_CHUNK_BYTES, end))
        stop = end if cut < 0 else cut
        chunk = msgspec.json.decode(b"[" + body[start:stop] + b"]")
        parts.append(_from_json(chunk, dt, (len(chunk),), len(chunk), where, max_depth))
        start = stop + 1
    flat = np.concatenate(parts) if parts else np.empty(0, dt.dtype)
    if flat.size != count:
        raise _NotShaped(f"{where}: data has {flat.size} elements, shape {list(shape)} needs {count}")
    return flat.reshape(shape)


def _row_chunks(
    compact: bytes, dt: Datatype, shape: tuple[int, ...], count: int, where: str, max_depth: int
) -> np.ndarray:
    """Numbers nested as the shape (no whitespace left), ~JSON_CHUNK_BYTES of whole rows per
    decode; a row larger than that alone is read the same way, a level down. With numbers only,
    `]...],[...[` with one bracket fewer than the rank on each side occurs only between two rows of
    the outermost array; each chunk of rows is checked against the shape as a whole value would be."""
    inner = compact[1:-1] if compact.endswith(b"]") else b"["  # malformed: the decode says so
    rank = len(shape)
    between = b"]" * (rank - 1) + b"," + b"[" * (rank - 1)
    row_count = math.prod(shape[1:])
    parts: list[np.ndarray] = []
    start, end = 0, len(inner)
    try:
        while start < end:
            first = inner.find(between, start)
            stop = end if first < 0 else first + rank - 1
            if stop - start > JSON_CHUNK_BYTES:  # one row alone is large
                row = inner[start:stop]
                read = _flat_chunks if rank == 2 else _row_chunks
                parts.append(read(row, dt, shape[1:], row_count, where, max_depth)[np.newaxis])
                start = stop + 1
                continue
            cut = inner.find(between, min(start + JSON_CHUNK_BYTES, end))
            stop = end if cut < 0 else cut + rank - 1
            try:
                chunk = msgspec.json.decode(b"[" + inner[start:stop] + b"]")
            except msgspec.DecodeError as exc:
                raise BadRequest(f"{where}: data is not valid JSON: {exc}") from None
            rows = (len(chunk), *shape[1:])
            parts.append(_from_json(chunk, dt, rows, len(chunk) * row_count, where, max_depth))
            start = stop + 1
    except _NotShaped:  # said of the whole tensor, not of a chunk of its rows
        raise _NotShaped(f"{where}: nested data does not have the tensor's shape {list(shape)}") from None
    array = np.concatenate(parts) if parts else np.empty((0, *shape[1:]), dt.dtype)
    if array.shape != shape:
        raise _NotShaped(f"{where}: data has {array.size} elements, shape {list(shape)} needs {count}")
    return array


class _NotShaped(BadRequest):
    """The data's element count or nesting is not the tensor's shape."""


def _from_json(
    data: Any, dt: Datatype, shape: tuple[int, ...], count: int, where: str, max_depth: int
) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    if dt.is_bytes:
        flat = _flat_strings(data, where, max_depth)
        if len(flat) != count:
            raise BadRequest(f"{where}: data has {len(flat)} elements, shape {list(shape)} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if not dt.json_kinds:
        raise BadRequest(
            f"{where}: {dt.name} cannot be sent as JSON numbers; use the binary tensor data extension"
        )
    try:
        array = np.array(data)
    except (ValueError, OverflowError):
        raise BadRequest(f"{where}: data is not a regular (non-ragged) array of numbers") from None
    if array.size != count:
        raise _NotShaped(f"{where}: data has {array.size} elements, shape {list(shape)} needs {count}")
    if array.ndim > 1 and array.shape != shape:
        raise _NotShaped(f"{where}: nested data has shape {list(array.shape)}, the tensor says {list(shape)}")
    if count and array.dtype.kind not in dt.json_kinds:
        expected = {"b": "booleans", "iu": "integers", "iuf": "numbers"}[dt.json_kinds]
        raise BadRequest(f"{where}: {dt.name} data must be {expected}")
    if count and dt.dtype.kind in "iu" and array.dtype != dt.dtype:
        info = np.iinfo(dt.dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise BadRequest(f"{where}: values must lie in [{info.min}, {info.max}] for {dt.name}")
    if count and dt.dtype.kind == "f" and array.dtype.itemsize > dt.dtype.itemsize:
        largest = float(np.finfo(dt.dtype).max)
        if float(np.abs(array).max()) > largest:  # the cast would make them inf
            raise BadRequest(f"{where}: values must lie in [-{largest:.6g}, {largest:.6g}] for {dt.name}")
    return array.astype(dt.dtype, copy=False).reshape(shape)


def _flat_strings(data: list[Any], where: str, max_depth: int) -> list[bytes]:
    out: list[bytes] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= max_depth:
                    raise BadRequest(f"{where}: data nests deeper than {max_depth} levels")
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise BadRequest(f"{where}: BYTES data must be strings, got {type(item).__name__}")
            out.append(item.encode())
        else:
            stack.pop()
    return out


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """InferResponse -> (body, JSON header length or None when the body is JSON only).

    Outputs go binary when asked: per output `binary_data`, else the request's `binary_data_output`.
    """
    default_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters.get("binary_data") for o in request.outputs} if request.outputs else {}
    entries: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        binary = wanted.get(out.name)
        if binary if binary is not None else default_binary:
            raw = (
                serialize_bytes(out.data)
                if out.datatype == "BYTES"
                else np.ascontiguousarray(out.data).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        elif out.datatype == "BYTES":
            entry["data"] = [
                x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in out.data.ravel()
            ]
        else:
            flat = np.ascontiguousarray(out.data).ravel()
            entry["data"] = flat if flat.size <= JSON_CHUNK_ELEMENTS else orjson.Fragment(_json_array(flat))
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tail:
        return header, None
    return b"".join((header, *tail)), len(header)


def loads(body: bytes, max_depth: int) -> Any:
    """A JSON body (control routes, SageMaker) nested at most `max_depth` levels, else 400."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):  # orjson's own limit, past ours
            raise BadRequest(f"request body nests deeper than {max_depth} levels") from None
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    check_depth(doc, max_depth, "request body: values")
    return doc


JSON_CHUNK_ELEMENTS = 1 << 18  # a larger output is written as JSON this many numbers at a time


def _json_array(flat: np.ndarray) -> bytes:
    """A large numeric array as JSON, a chunk per call (as `_json_data` reads it): on an encoding
    thread the event loop runs between chunks."""
    parts = [
        orjson.dumps(flat[i : i + JSON_CHUNK_ELEMENTS], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        for i in range(0, flat.size, JSON_CHUNK_ELEMENTS)
    ]
    return b"[" + b",".join(parts) + b"]"


def is_large(response: InferResponse) -> bool:
    """Whether encoding the answer is worth a thread (its outputs hold over a chunk of numbers)."""
    total = 0
    for out in response.outputs:  # a loop, not sum(<generator>): this runs for every answer
        total += out.data.size
    return total > JSON_CHUNK_ELEMENTS
