"""Typed messages between the front and its workers, and the frame they travel in.

A frame is `<u32 header bytes><u32 buffer bytes>`, a msgpack header (one of the structs below,
tagged) and the raw tensor buffers back to back, each described by a `Tensor` of the header.
Tensors cross as their numpy bytes (BYTES in the V2 length-prefixed form) and are read back with
`np.frombuffer` over the received frame: no pickle, and no copy beyond the socket read.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from modelfleet.errors import BadRequest
from modelfleet.protocol.datatypes import DATATYPES, deserialize_bytes, serialize_bytes

PREFIX = struct.Struct("<II")
MAX_HEADER_BYTES = 16 << 20


class FrameError(Exception):
    """A frame that does not hold what its header says: the connection cannot be trusted further."""


class Tensor(msgspec.Struct, array_like=True, frozen=True):
    name: str
    datatype: str
    shape: tuple[int, ...]
    nbytes: int


class Start(msgspec.Struct, tag="start", frozen=True):
    """Front -> worker, first message: who it is and what it may use."""

    worker_id: int
    device: str
    cores: list[int]
    budget_bytes: int
    settings_json: str


class Hello(msgspec.Struct, tag="hello", frozen=True):
    """Worker -> front once it is ready to serve."""

    pid: int


class Infer(msgspec.Struct, tag="infer", frozen=True):
    id: int
    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[str] | None = None
    request_id: str | None = None
    parameters: dict[str, Any] = {}


class Result(msgspec.Struct, tag="result", frozen=True):
    id: int
    model_name: str
    model_version: str
    outputs: list[Tensor]
    parameters: dict[str, Any] = {}


class Failed(msgspec.Struct, tag="failed", frozen=True):
    id: int
    status: int
    message: str


class Load(msgspec.Struct, tag="load", frozen=True):
    id: int
    model: str


class Version(msgspec.Struct, frozen=True):
    version: int
    config_json: str  # the completed config, as the worker's loaded copy has it
    nbytes: int


class Loaded(msgspec.Struct, tag="loaded", frozen=True):
    id: int
    model: str
    versions: list[Version]


class Unload(msgspec.Struct, tag="unload", frozen=True):
    id: int
    model: str


class Done(msgspec.Struct, tag="done", frozen=True):
    id: int


class Stats(msgspec.Struct, tag="stats", frozen=True):
    id: int


class ModelUse(msgspec.Struct, frozen=True):
    name: str
    version: str
    resident_bytes: int
    in_flight: int
    statistics: dict[str, Any]  # the V2 statistics entry of this copy
    residency: dict[str, Any]


class StatsReply(msgspec.Struct, tag="stats_reply", frozen=True):
    id: int
    rss_bytes: int
    cpu_seconds: float
    memory: dict[str, Any]
    models: list[ModelUse]
    index: list[dict[str, Any]]


Message = Start | Hello | Infer | Result | Failed | Load | Loaded | Unload | Done | Stats | StatsReply

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def tensor_bytes(datatype: str, array: np.ndarray) -> memoryview | bytes:
    """The raw bytes of one tensor: the array's own memory when it is contiguous (no copy)."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def encode(header: Message, buffers: Sequence[memoryview | bytes] = ()) -> list[memoryview | bytes]:
    """The frame as a list of chunks for `writelines` (tensor buffers are not joined)."""
    head = _encoder.encode(header)
    size = sum(len(b) for b in buffers)
    return [PREFIX.pack(len(head), size) + head, *buffers]


def frame_lengths(prefix: bytes) -> tuple[int, int]:
    header, buffers = PREFIX.unpack(prefix)
    if header > MAX_HEADER_BYTES:
        raise FrameError(f"frame header of {header} bytes is over the {MAX_HEADER_BYTES} limit")
    return header, buffers


def decode(frame: bytes | memoryview, header_bytes: int) -> tuple[Message, memoryview]:
    """A frame's body (after the prefix) -> its message and the view of its tensor buffers."""
    view = memoryview(frame)
    if len(view) < header_bytes:
        raise FrameError(f"frame is truncated: {len(view)} bytes, header alone is {header_bytes}")
    try:
        message = _decoder.decode(view[:header_bytes])
    except msgspec.DecodeError as exc:
        raise FrameError(f"frame header is not a valid message: {exc}") from None
    buffers = view[header_bytes:]
    tensors = (
        message.inputs
        if isinstance(message, Infer)
        else message.outputs
        if isinstance(message, Result)
        else []
    )
    if sum(t.nbytes for t in tensors) != len(buffers):
        raise FrameError(
            f"frame holds {len(buffers)} bytes of tensors, its header describes "
            f"{sum(t.nbytes for t in tensors)}"
        )
    return message, buffers


def describe(named: Sequence[tuple[str, str, np.ndarray]]) -> tuple[list[Tensor], list[memoryview | bytes]]:
    """(name, datatype, array) triples -> their header entries and buffers."""
    tensors, buffers = [], []
    for name, datatype, array in named:
        raw = tensor_bytes(datatype, array)
        tensors.append(Tensor(name, datatype, tuple(array.shape), len(raw)))
        buffers.append(raw)
    return tensors, buffers


def arrays(tensors: Sequence[Tensor], buffers: memoryview) -> list[np.ndarray]:
    """The arrays a header describes, over the frame's memory (read-only, not copied)."""
    out, offset = [], 0
    for t in tensors:
        raw = buffers[offset : offset + t.nbytes]
        offset += t.nbytes
        dt = DATATYPES.get(t.datatype)
        if dt is None:
            raise FrameError(f"tensor '{t.name}' has unknown datatype {t.datatype}")
        count = int(np.prod(t.shape, dtype=np.int64))
        if dt.is_bytes:
            try:
                array = deserialize_bytes(raw, count, f"tensor '{t.name}'")
            except BadRequest as exc:
                raise FrameError(exc.message) from None
        else:
            if count * dt.itemsize != t.nbytes:
                raise FrameError(f"tensor '{t.name}': {t.nbytes} bytes do not make shape {list(t.shape)}")
            array = np.frombuffer(raw, dtype=dt.dtype)
        out.append(array.reshape(t.shape))
    return out
