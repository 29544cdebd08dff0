"""Typed messages between the front and its workers, and the frame they travel in."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

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
    """Worker -> front once it is ready to serve (the answer to Start, whose id is 0)."""

    pid: int
    id: int = 0


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
    counts: dict[str, Any] = {}  # ModelStats.wire(): every count and histogram, for /metrics


class StatsReply(msgspec.Struct, tag="stats_reply", frozen=True):
    id: int
    rss_bytes: int
    cpu_seconds: float
    memory: dict[str, Any]
    models: list[ModelUse]


Message = Start | Hello | Infer | Result | Failed | Load | Loaded | Unload | Done | Stats | StatsReply

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def tensor_bytes(datatype: str, array: np.ndarray) -> memoryview | bytes:
    """The raw bytes of one tensor: the array's own memory when it is contiguous (no copy)."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    if array.flags.c_contiguous and array.size and array.dtype.isnative:
        return array.data.cast("B")  # the array's own memory, in a third of the time of the views below
    native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return native.reshape(-1).view(np.uint8).data


def encode(header: Message, buffers: Sequence[memoryview | bytes] = ()) -> list[memoryview | bytes]:
    """The frame as a list of chunks for `writelines` (tensor buffers are not joined)."""
    head = _encoder.encode(header)
    size = sum(len(b) for b in buffers)
    return [PREFIX.pack(len(head), size) + head, *buffers]


def frame_lengths(prefix: bytes | memoryview) -> tuple[int, int]:
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
        count = math.prod(t.shape)  # not np.prod: 40x slower on a short tuple
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


class FrameProtocol(asyncio.Protocol):
    """Frames in and out over one socket, without a stream reader's per-read futures: every frame
    that a read completes is handed to `on_message` at once, many per read under load."""

    def __init__(
        self,
        on_message: Callable[[Message, memoryview], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self._on_lost(exc)

    def send(self, header: Message, buffers: Sequence[memoryview | bytes] = ()) -> bool:
        """Queue one frame; False when the connection is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        chunks = encode(header, buffers)
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif sum(len(c) for c in chunks) < 65536:
            transport.write(b"".join(chunks))
        else:
            transport.writelines(chunks)
        return True

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._needed():
                return  # a large frame still arriving: no copy until it is whole
            data = bytes(buffer)
            buffer.clear()
        view = memoryview(data)
        try:
            offset = self._frames(view)
        except FrameError as exc:
            if self.transport is not None:
                self.transport.abort()
            self._on_lost(exc)
            return
        if offset < len(data):
            buffer += view[offset:]

    def _needed(self) -> int:
        buffer = self._buffer
        if len(buffer) < PREFIX.size:
            return PREFIX.size
        header_bytes, buffer_bytes = PREFIX.unpack_from(buffer)
        return int(PREFIX.size + header_bytes + buffer_bytes)

    def _frames(self, view: memoryview) -> int:
        """Hand over every complete frame in `view` (used in place: its arrays keep the read's
        bytes alive, no copy); returns the bytes consumed."""
        offset, end = 0, len(view)
        size = PREFIX.size
        while end - offset >= size:
            header_bytes, buffer_bytes = frame_lengths(view[offset : offset + size])
            stop = offset + size + header_bytes + buffer_bytes
            if stop > end:
                break
            message, buffers = decode(view[offset + size : stop], header_bytes)
            self._on_message(message, buffers)
            offset = stop
        return offset
