"""Frames and messages between the front and workers: every datatype round trips, bad frames fail."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.protocol.datatypes import DATATYPES
from modelfleet.workers import messages as m


def _round_trip(header: m.Message, buffers: list[memoryview | bytes]) -> tuple[m.Message, memoryview]:
    frame = b"".join(bytes(chunk) for chunk in m.encode(header, buffers))
    header_bytes, buffer_bytes = m.frame_lengths(frame[: m.PREFIX.size])
    body = frame[m.PREFIX.size :]
    assert len(body) == header_bytes + buffer_bytes
    return m.decode(body, header_bytes)


def _sample(name: str, shape: tuple[int, ...]) -> np.ndarray:
    dt = DATATYPES[name]
    count = int(np.prod(shape))
    if dt.is_bytes:
        return np.array([f"é{i}".encode() * i for i in range(count)], dtype=object).reshape(shape)
    return (np.arange(count) % 2 == 1 if name == "BOOL" else np.arange(count)).astype(dt.dtype).reshape(shape)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("shape", [(2, 3), (0, 4), (), (5,)])
def test_every_datatype_and_shape_round_trips(datatype: str, shape: tuple[int, ...]) -> None:
    array = _sample(datatype, shape)
    tensors, buffers = m.describe([("x", datatype, array), ("y", "FP32", np.ones((1, 2), np.float32))])
    message, raw = _round_trip(m.Infer(7, "model", "1", tensors, ["out"], "req-1", {"priority": 2}), buffers)
    assert isinstance(message, m.Infer)
    assert (message.id, message.model, message.version, message.outputs) == (7, "model", "1", ["out"])
    assert message.parameters == {"priority": 2} and message.request_id == "req-1"
    got, ones = m.arrays(message.inputs, raw)
    assert got.shape == array.shape and got.dtype == array.dtype
    assert got.tolist() == array.tolist()
    assert ones.tolist() == [[1.0, 1.0]]


def test_numeric_tensors_are_read_in_place_not_copied() -> None:
    tensors, buffers = m.describe([("x", "FP32", np.arange(4, dtype=np.float32))])
    message, raw = _round_trip(m.Result(1, "m", "1", tensors), buffers)
    assert isinstance(message, m.Result)
    (array,) = m.arrays(message.outputs, raw)
    assert not array.flags.owndata and not array.flags.writeable


def test_a_non_contiguous_array_is_sent_in_logical_order() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    tensors, buffers = m.describe([("x", "INT32", array)])
    message, raw = _round_trip(m.Result(1, "m", "1", tensors), buffers)
    assert isinstance(message, m.Result)
    assert m.arrays(message.outputs, raw)[0].tolist() == array.tolist()


def test_a_foreign_byte_order_array_is_sent_in_native_order() -> None:
    array = np.arange(6, dtype=">f4").reshape(2, 3)  # big-endian, from a file or a Python model
    tensors, buffers = m.describe([("x", "FP32", array)])
    message, raw = _round_trip(m.Result(1, "m", "1", tensors), buffers)
    assert isinstance(message, m.Result)
    got = m.arrays(message.outputs, raw)[0]
    assert got.dtype == np.float32 and got.tolist() == array.tolist()


@pytest.mark.parametrize(
    "message",
    [
        m.Start(0, "cpu:0-1", [0, 1], 1 << 30, "{}"),
        m.Hello(123),
        m.Failed(3, 503, "worker 1 died"),
        m.Load(4, "bert"),
        m.Loaded(4, "bert", [m.Version(1, "{}", 10)]),
        m.Unload(5, "bert"),
        m.Done(5),
        m.Stats(6),
        m.StatsReply(6, 1, 0.5, {"used_bytes": 1}, [m.ModelUse("a", "1", 2, 0, {}, {})]),
    ],
)
def test_control_messages_round_trip(message: m.Message) -> None:
    assert _round_trip(message, [])[0] == message


def test_a_truncated_frame_is_refused() -> None:
    tensors, buffers = m.describe([("x", "FP64", np.zeros(8))])
    frame = b"".join(bytes(c) for c in m.encode(m.Result(1, "m", "1", tensors), buffers))
    header_bytes, _ = m.frame_lengths(frame[: m.PREFIX.size])
    with pytest.raises(m.FrameError, match="holds 60 bytes of tensors, its header describes 64"):
        m.decode(frame[m.PREFIX.size : -4], header_bytes)
    with pytest.raises(m.FrameError, match="truncated"):
        m.decode(frame[m.PREFIX.size : m.PREFIX.size + 3], header_bytes)


def test_a_header_that_lies_about_shape_or_bytes_is_refused() -> None:
    lying = [m.Tensor("x", "FP32", (3,), 8)]
    with pytest.raises(m.FrameError, match="8 bytes do not make shape"):
        m.arrays(lying, memoryview(bytes(8)))
    with pytest.raises(m.FrameError, match="BYTES data of 2 bytes cannot hold 1 elements"):
        m.arrays([m.Tensor("s", "BYTES", (1,), 2)], memoryview(b"ab"))
    with pytest.raises(m.FrameError, match="unknown datatype"):
        m.arrays([m.Tensor("s", "BF16", (1,), 2)], memoryview(b"ab"))


def test_garbage_and_oversized_headers_are_refused() -> None:
    with pytest.raises(m.FrameError, match="not a valid message"):
        m.decode(b"\x81\xa4type\xa4nope", 11)
    with pytest.raises(m.FrameError, match="over the"):
        m.frame_lengths(m.PREFIX.pack(m.MAX_HEADER_BYTES + 1, 0))
