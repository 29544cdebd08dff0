"""Typed messages between the bench coordinator and its client processes (msgpack, never pickle).

The coordinator sends a `ShareJob`, the client answers `Ready` once its requests are built, waits
for `Go`, runs, and sends back a `ShareResult` (closed loop) or an `OpenShareResult` (open loop,
when the job carries an `OpenLoopJob`) whose figures travel as raw little-endian arrays.
"""

from __future__ import annotations

from typing import IO, TypeVar

import msgspec

from modelfleet.bench.encode import Body
from modelfleet.bench.spec import Arrivals, Phase, Popularity, Target, Thresholds, UserPhase


class Workload(msgspec.Struct, frozen=True):
    """What to send: the models, their pre-encoded bodies, and how popular each model is."""

    target: Target
    models: list[str]
    bodies: list[Body]
    body_sets: list[list[int]]  # per input signature: indexes into `bodies`
    model_body_set: list[int]  # per model: index into `body_sets`
    popularity: Popularity
    zipf_s: float
    headers: list[tuple[str, str]] = []  # sent with every request (the API key)


class OpenLoopJob(msgspec.Struct, frozen=True):
    """The schedule of an open-loop share: share `share` of `shares` of the phases' arrivals."""

    phases: list[Phase]  # the recorded window; the warm-up runs at the first phase's rate
    arrivals: Arrivals
    share: int
    shares: int


class ShareJob(msgspec.Struct, frozen=True):
    """One client process's part of the run."""

    workload: Workload
    connections: int  # closed loop: each with one request in flight; open loop: the pool's limit
    warmup_s: float
    duration_s: float
    timeout_s: float
    seed: int
    open_loop: OpenLoopJob | None = None
    users: list[UserPhase] = []  # closed loop: this process's users over the record
    thresholds: Thresholds = Thresholds()


class StopInfo(msgspec.Struct, frozen=True):
    """Which stop threshold ended a closed-loop record, the value seen, its limit, and when."""

    reason: str  # p90 | p99 | error_rate | max_requests
    value: float
    limit: float
    at_s: float = 0.0  # seconds into the record


class Ready(msgspec.Struct, frozen=True):
    pass


class Go(msgspec.Struct, frozen=True):
    pass


class ShareResult(msgspec.Struct, frozen=True):
    """What one client process saw inside the recorded window."""

    latencies_ns: bytes  # int64 little-endian, one per successful response
    model_indexes: bytes  # int32 little-endian, parallel to latencies_ns
    errors: dict[str, int]  # by kind: connect, timeout, read, protocol, http_<status>
    model_errors: dict[int, int]  # errors by model index (connect errors have no model)
    warmup_errors: int
    cpu_s: float  # this process's CPU time inside the recorded window
    done_ns: bytes = b""  # int64: each answer's completion, ns from the window's start (parallel)
    error_times_ns: bytes = b""  # int64: each recorded error's time, ns from the window's start
    recorded_s: float = 0.0  # the window's length (shorter than asked when a threshold stopped it)
    stopped: StopInfo | None = None


class OpenShareResult(msgspec.Struct, frozen=True):
    """Every request one open-loop client process scheduled inside the recorded window.

    Parallel int arrays, one entry per request, times relative to the window's start.
    """

    scheduled_ns: bytes  # int64: when it was due
    lag_ns: bytes  # int64: how much later it was written (0 when never sent)
    latency_ns: bytes  # int64: from `scheduled` to the answer's last byte, or to the failure
    statuses: bytes  # int16: HTTP status, or a negative client-side failure code
    model_indexes: bytes  # int32
    warmup_errors: int
    cpu_s: float  # this process's CPU time from the window's start until the last answer
    peak_connections: int


M = TypeVar("M")
_LENGTH_BYTES = 4


def write_message(stream: IO[bytes], message: msgspec.Struct) -> None:
    data = msgspec.msgpack.encode(message)
    stream.write(len(data).to_bytes(_LENGTH_BYTES, "little") + data)
    stream.flush()


def read_message(stream: IO[bytes], kind: type[M]) -> M:
    """The next message, which must be a `kind`; EOFError when the stream ends first."""
    prefix = stream.read(_LENGTH_BYTES)
    if len(prefix) < _LENGTH_BYTES:
        raise EOFError("the other process closed its pipe")
    length = int.from_bytes(prefix, "little")
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the other process closed its pipe mid-message")
    return msgspec.msgpack.decode(data, type=kind)
