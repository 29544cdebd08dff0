"""What one `modelfleet bench` run is asked to do, parsed once at the CLI edge and checked here.

Everything below the CLI takes a `BenchSpec`; nothing else reads options.
"""

from __future__ import annotations

import enum
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class Popularity(enum.StrEnum):
    UNIFORM = "uniform"
    ZIPF = "zipf"


class Encoding(enum.StrEnum):
    JSON = "json"  # V2 JSON tensors
    BINARY = "binary"  # binary tensor data extension: JSON header + raw bytes, binary outputs


class Arrivals(enum.StrEnum):
    CONSTANT = "constant"  # open loop: evenly spaced sends, 1/R apart
    POISSON = "poisson"  # open loop: exponential gaps of mean 1/R


class Protocol(enum.StrEnum):
    V2 = "v2"  # KServe V2 over HTTP: POST /v2/models/NAME/infer
    GRPC = "grpc"  # KServe V2 over gRPC: inference.GRPCInferenceService/ModelInfer
    SAGEMAKER = "sagemaker"  # POST /invocations with X-Amzn-SageMaker-Target-Model: NAME


SAGEMAKER_TARGET_HEADER = "X-Amzn-SageMaker-Target-Model"
API_KEY_ENV = "MODELFLEET_API_KEY"


_PHASE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*@\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/s)?\s*$")
_DURATION_UNITS_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Phase:
    """One step of an open-loop run: `rate_per_s` requests per second for `duration_s` seconds."""

    duration_s: float
    rate_per_s: float

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"a phase needs a positive duration, got {self.duration_s} s")
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"a phase needs a positive rate, got {self.rate_per_s} requests/s")

    @classmethod
    def parse(cls, text: str) -> Phase:
        """`DURATION@RATE`: `10s@100`, `500ms@2000`, `2m@50` or `10@100` (seconds); RATE per second."""
        match = _PHASE.match(text)
        if match is None:
            raise ValueError(f"--phase expects DURATION@RATE such as 10s@100 or 500ms@2000, got '{text}'")
        number, unit, rate = match.groups()
        return cls(float(number) * _DURATION_UNITS_S[unit], float(rate))


_USER_PHASE = re.compile(r"^\s*(\d+)\s*:\s*(\d+(?:\.\d*)?|\.\d+)\s*:\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


@dataclass(frozen=True, slots=True)
class UserPhase:
    """One phase of a closed-loop user ramp, as Inference Recommender's `TrafficPattern.Phases`:
    `initial_users` users at the phase's start, `spawn_per_min` more every minute, for `duration_s`."""

    initial_users: int
    spawn_per_min: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.initial_users < 1:
            raise ValueError(f"a user phase starts with at least 1 user, got {self.initial_users}")
        if not (self.spawn_per_min >= 0 and math.isfinite(self.spawn_per_min)):
            raise ValueError(f"a user phase's spawn rate must not be negative, got {self.spawn_per_min}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"a user phase needs a positive duration, got {self.duration_s} s")

    @classmethod
    def parse(cls, text: str) -> UserPhase:
        """`INITIAL:SPAWN_PER_MIN:DURATION`, e.g. `2:2:25m` (2 users, +2 a minute, 25 minutes)."""
        match = _USER_PHASE.match(text)
        if match is None:
            raise ValueError(
                f"--users expects INITIAL:SPAWN_PER_MIN:DURATION such as 2:2:25m or 4:0:30s, got '{text}'"
            )
        users, spawn, number, unit = match.groups()
        return cls(int(users), float(spawn), float(number) * _DURATION_UNITS_S[unit])

    def users_at(self, elapsed_s: float) -> int:
        """Users `elapsed_s` seconds into the phase."""
        return self.initial_users + int(self.spawn_per_min * elapsed_s / 60.0)

    @property
    def final_users(self) -> int:
        return self.users_at(self.duration_s)


def users_at(phases: tuple[UserPhase, ...] | list[UserPhase], t_s: float) -> int:
    """Users `t_s` seconds into the recorded window (before it: the first phase's initial users)."""
    start = 0.0
    for phase in phases:
        if t_s < start + phase.duration_s:
            return phase.users_at(max(0.0, t_s - start))
        start += phase.duration_s
    return phases[-1].final_users if phases else 0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What stops a closed-loop run early, checked on the answers of the last `window_s` seconds
    (latency, error rate) or on the whole record (request count); None: not checked."""

    p90_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    """Failed share of the requests answered (or failed) in the window, 0..1."""
    max_requests: int | None = None
    window_s: float = 5.0
    min_answers: int = 20
    """Fewer answers than this in the window: latency and error rate are not judged yet."""

    def __post_init__(self) -> None:
        checks = [
            (self.p90_ms is None or self.p90_ms > 0, f"--stop-p90-ms must be positive, got {self.p90_ms}"),
            (self.p99_ms is None or self.p99_ms > 0, f"--stop-p99-ms must be positive, got {self.p99_ms}"),
            (
                self.error_rate is None or 0 <= self.error_rate < 1,
                f"--stop-error-rate is a share from 0 to 1 (0.05 is 5 %), got {self.error_rate}",
            ),
            (
                self.max_requests is None or self.max_requests >= 1,
                f"--max-requests must be at least 1, got {self.max_requests}",
            ),
            (self.window_s > 0, f"--stop-window-s must be positive, got {self.window_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.p90_ms, self.p99_ms, self.error_rate, self.max_requests))


@dataclass(frozen=True, slots=True)
class Target:
    """Where the requests go: host and port to connect to, Host header, path prefix, protocol."""

    host: str
    port: int
    host_header: str
    base_path: str  # "" or "/prefix" (no trailing slash)
    protocol: Protocol = Protocol.V2

    @classmethod
    def parse(cls, url: str, protocol: Protocol = Protocol.V2) -> Target:
        """An http:// URL; for gRPC also grpc://HOST:PORT or HOST:PORT (port 8001 by default)."""
        if protocol is Protocol.GRPC and "://" not in url:
            url = f"grpc://{url}"
        parts = urlsplit(url)
        schemes = ("http", "grpc") if protocol is Protocol.GRPC else ("http",)
        if parts.scheme not in schemes:
            wanted = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"--url must start with {wanted} (got '{url}'); TLS is not supported")
        if not parts.hostname:
            raise ValueError(f"--url '{url}' has no host")
        try:
            port = parts.port or (8001 if protocol is Protocol.GRPC else 80)
        except ValueError:
            raise ValueError(f"--url '{url}' has an invalid port") from None
        grpc_default = protocol is Protocol.GRPC and parts.port is None
        netloc = f"{parts.netloc}:{port}" if grpc_default else parts.netloc
        return cls(parts.hostname, port, netloc, parts.path.rstrip("/"), protocol)

    @property
    def url(self) -> str:
        scheme = "grpc" if self.protocol is Protocol.GRPC else "http"
        return f"{scheme}://{self.host_header}{self.base_path}"


@dataclass(frozen=True, slots=True)
class ModelSelection:
    """Which models are hit: explicit names, or `count` names made from a pattern with `{i}`."""

    names: tuple[str, ...] = ()
    pattern: str | None = None  # e.g. "tenant-{i:04d}"
    count: int = 0
    start: int = 0

    def __post_init__(self) -> None:
        if self.names and self.pattern:
            raise ValueError("give either --model or --model-pattern, not both")
        if not self.names and not self.pattern:
            raise ValueError("name at least one model: --model NAME or --model-pattern 'tenant-{i}'")
        if self.pattern is not None:
            if self.count < 1:
                raise ValueError(f"--model-count must be at least 1 with --model-pattern, got {self.count}")
            fields = [f for _, f, _, _ in string.Formatter().parse(self.pattern) if f is not None]
            if fields != ["i"]:
                raise ValueError(f"--model-pattern needs exactly one '{{i}}' field, got '{self.pattern}'")
            self.expand()  # a bad format spec fails here, before any work

    def expand(self) -> tuple[str, ...]:
        if self.pattern is None:
            return self.names
        try:
            return tuple(self.pattern.format(i=i) for i in range(self.start, self.start + self.count))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--model-pattern '{self.pattern}' cannot format an integer: {exc}") from None


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`NAME=D1,D2,...` items into {name: shape}; every dimension a positive integer."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ValueError(f"--shape expects NAME=D1,D2,... with positive integers, got '{item}'")
        shapes[name] = shape
    return shapes


def split_names(items: list[str]) -> tuple[str, ...]:
    """Repeated and comma-separated model names, in order, without duplicates or blanks."""
    names = (n.strip() for item in items for n in item.split(","))
    return tuple(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True, slots=True)
class BenchSpec:
    target: Target
    models: ModelSelection
    same_signature: bool | None = None
    """Describe the first model only and reuse its inputs for all; None: yes for a pattern."""
    popularity: Popularity = Popularity.UNIFORM
    zipf_s: float = 1.1
    """Zipf exponent: P(rank k) is proportional to 1 / k**s."""
    concurrency: int = 8
    """Connections, each with one request in flight (closed loop)."""
    duration_s: float = 10.0
    """Recorded seconds; with `phases`, their sum (set here, not given)."""
    warmup_s: float = 2.0
    timeout_s: float = 30.0
    """A request unanswered for this long counts as a timeout and its connection is replaced."""
    encoding: Encoding = Encoding.JSON
    input_file: Path | None = None
    """A V2 JSON request body sent to every model (as is, or converted to binary)."""
    batch_size: int = 1
    """Size given to a leading -1 dimension."""
    seq_len: int = 16
    """Size given to every other -1 dimension."""
    seq_len_max: int | None = None
    """Mixed lengths: each pre-built body's other -1 dimensions drawn from seq_len..seq_len_max."""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Full shapes for inputs by name, overriding the two rules above."""
    bodies: int = 4
    """Distinct pre-built request bodies per input signature."""
    processes: int = 1
    seed: int = 0
    top_models: int = 10
    """Rows in the per-model breakdown."""
    rate_per_s: float | None = None
    """Open loop: requests sent per second whatever the server answers (None: closed loop)."""
    phases: tuple[Phase, ...] = ()
    """Open loop in steps, one rate after the other (instead of `rate_per_s` and `duration_s`)."""
    arrivals: Arrivals = Arrivals.CONSTANT
    """Open loop: evenly spaced sends, or a Poisson process of the same mean rate."""
    max_connections: int = 512
    """Open loop: the most keep-alive connections the pool opens; a request that finds none free
    then is counted as client_saturated and not sent (the offered load never waits for the server)."""
    user_phases: tuple[UserPhase, ...] = ()
    """Closed loop with a user ramp (instead of a fixed `concurrency` for `duration_s`)."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """Closed loop: what stops the run early."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as `Authorization: Bearer KEY` (gRPC: the same metadata); never written to a report."""
    usd_per_hour: float | None = None
    """What the server's machine costs: the report adds $ per million inferences."""
    instance_type: str | None = None
    """The catalogue instance type `usd_per_hour` came from, if any."""

    def __post_init__(self) -> None:
        if self.phases:
            if self.rate_per_s is not None:
                raise ValueError("give either --rate or --phase, not both")
            # frozen: the recorded duration follows from the phases, so set it once here
            object.__setattr__(self, "duration_s", sum(p.duration_s for p in self.phases))
        if self.user_phases:
            if self.open_loop:
                raise ValueError("--users is a closed-loop ramp; it does not go with --rate or --phase")
            object.__setattr__(self, "duration_s", sum(p.duration_s for p in self.user_phases))
            top = max(max(p.initial_users, p.final_users) for p in self.user_phases)
            object.__setattr__(self, "concurrency", top)
        self._check_modes()
        connections = (
            (
                self.max_connections >= self.processes,
                f"--processes ({self.processes}) cannot exceed --max-connections ({self.max_connections}): "
                "each process needs a connection",
            )
            if self.open_loop
            else (
                self.processes <= self.concurrency,
                f"--processes ({self.processes}) cannot exceed --concurrency ({self.concurrency}): "
                "each process needs a connection",
            )
        )
        checks = [
            (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
            (self.duration_s > 0, f"--duration must be positive, got {self.duration_s}"),
            (self.warmup_s >= 0, f"--warmup must not be negative, got {self.warmup_s}"),
            (self.timeout_s > 0, f"--timeout must be positive, got {self.timeout_s}"),
            (self.zipf_s > 0, f"--zipf-s must be positive, got {self.zipf_s}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.seq_len >= 1, f"--seq-len must be at least 1, got {self.seq_len}"),
            (
                self.seq_len_max is None or self.seq_len_max >= self.seq_len,
                f"--seq-len-max ({self.seq_len_max}) must be at least --seq-len ({self.seq_len})",
            ),
            (self.bodies >= 1, f"--bodies must be at least 1, got {self.bodies}"),
            (self.processes >= 1, f"--processes must be at least 1, got {self.processes}"),
            (
                self.rate_per_s is None or (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)),
                f"--rate must be positive, got {self.rate_per_s}",
            ),
            (self.max_connections >= 1, f"--max-connections must be at least 1, got {self.max_connections}"),
            connections,
        ]
        if self.input_file is not None and self.shapes:
            checks.append((False, "--shape does not apply with --input-file, which fixes every shape"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _check_modes(self) -> None:
        """The combinations a run cannot do, named."""
        grpc = self.target.protocol is Protocol.GRPC
        checks = [
            (not (grpc and self.open_loop), "the open loop (--rate, --phase) drives HTTP only, not gRPC"),
            (not (grpc and self.input_file is not None), "--input-file is for HTTP targets, not gRPC"),
            (
                not (self.thresholds.any and self.open_loop),
                "stop thresholds apply to the closed loop (-c or --users), not to --rate or --phase",
            ),
            (
                not ((self.thresholds.any or self.user_phases) and self.processes > 1),
                "--users and stop thresholds run in one client process: leave out --processes",
            ),
            (
                self.usd_per_hour is None or (self.usd_per_hour > 0 and math.isfinite(self.usd_per_hour)),
                f"--price-per-hour must be positive, got {self.usd_per_hour}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def open_loop(self) -> bool:
        """Whether requests go out on a schedule (`--rate` / `--phase`) rather than one per answer."""
        return self.rate_per_s is not None or bool(self.phases)

    @property
    def schedule(self) -> tuple[Phase, ...]:
        """The open-loop phases of the recorded window (one for `--rate`); empty for a closed loop."""
        if self.rate_per_s is not None:
            return (Phase(self.duration_s, self.rate_per_s),)
        return self.phases

    @property
    def users(self) -> tuple[UserPhase, ...]:
        """The closed loop's user phases: `user_phases`, or `concurrency` users all along."""
        return self.user_phases or (UserPhase(self.concurrency, 0.0, self.duration_s),)

    @property
    def shares_signature(self) -> bool:
        """Whether one metadata document stands for every model."""
        if self.same_signature is None:
            return self.models.pattern is not None
        return self.same_signature
