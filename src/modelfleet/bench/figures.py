"""The figures of a run as plain data: latency summaries, the open loop's outcomes and seconds,
the closed loop's seconds and user phases, and the run's result. A leaf: stats.py, openstats.py
and series.py compute these, report.py and plot.py read them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelfleet.bench.messages import StopInfo

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: np.ndarray, p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(p / 100 * n))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of successful requests, in milliseconds (NaN when there are none)."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, latencies_ns: np.ndarray) -> LatencySummary:
        ms = np.sort(latencies_ns).astype(np.float64) / 1e6
        p50, p90, p95, p99 = (percentile(ms, p) for p in PERCENTILES)
        mean = float(ms.mean()) if len(ms) else math.nan
        return cls(len(ms), mean, p50, p90, p95, p99, float(ms[-1]) if len(ms) else math.nan)


# -- open loop --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What became of the requests scheduled inside one window: a phase, or the whole run."""

    start_s: float
    duration_s: float
    rate_per_s: float  # asked for (mean rate over the run's phases for the whole run)
    scheduled: int
    sent: int  # scheduled less client_saturated
    send_rate_per_s: float  # sent over the time from the window's start to its last send, or its length
    ok: int  # 2xx answers to these requests, whenever they came
    goodput_per_s: float  # 2xx answers that arrived inside the window (to any request), per second
    statuses: dict[str, int]  # HTTP status -> answers, e.g. {"200": 940, "429": 60}
    failures: dict[str, int]  # client side: client_saturated, connect, timeout, read, protocol
    ok_latency: LatencySummary
    refused_latency: LatencySummary  # the 429 answers: how quickly the server said no


@dataclass(frozen=True, slots=True)
class OpenSecond:
    """One second of the recorded window (and of the drain after it)."""

    t_s: int
    sent: int  # requests written in this second
    ok: int  # 2xx answers that arrived in it
    refused: int  # 429 answers that arrived in it
    failed: int  # other answers and client-side failures that ended in it
    saturated: int  # requests due in it that found the pool full
    ok_p99_ms: float  # of the 2xx answers that arrived in it (NaN when none)


@dataclass(frozen=True, slots=True)
class OpenLoopFigures:
    arrivals: str
    max_connections: int
    peak_connections: int
    total: Outcomes
    phases: list[Outcomes]
    series: list[OpenSecond]
    send_lag: LatencySummary  # how late requests left against their schedule


# -- closed loop ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClosedSecond:
    """One second of the record: answers and errors completed in it, their latency, the users."""

    t_s: int
    length_s: float  # 1, or less for the record's last, partial second
    users: int
    ok: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class UserPhaseFigures:
    start_s: float
    duration_s: float  # recorded seconds of this phase (shorter when a threshold stopped the run)
    users_from: int
    users_to: int
    ok: int
    errors: int
    throughput_per_s: float
    latency: LatencySummary


@dataclass(frozen=True, slots=True)
class ClosedLoopFigures:
    recorded_s: float
    series: list[ClosedSecond]
    phases: list[UserPhaseFigures]
    stopped: StopInfo | None


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelRow:
    model: str
    requests: int
    requests_per_s: float
    errors: int
    latency: LatencySummary


@dataclass(frozen=True, slots=True)
class BenchResult:
    duration_s: float
    requests: int  # successful responses inside the recorded window
    requests_per_s: float
    latency: LatencySummary
    errors: dict[str, int]  # by kind, inside the recorded window
    warmup_errors: int
    models_hit: int
    top_models: list[ModelRow]  # busiest first; empty for a single-model run
    client_processes: int
    client_cpu_s: float
    open_loop: OpenLoopFigures | None = None  # per status, phase and second, for --rate / --phase
    closed_loop: ClosedLoopFigures | None = None  # per second and user phase, the threshold that stopped it

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    @property
    def client_cpu_us_per_request(self) -> float:
        """Client CPU per successful request (closed loop), or per request sent (open loop)."""
        count = self.requests if self.open_loop is None else self.open_loop.total.sent
        return self.client_cpu_s * 1e6 / count if count else math.nan
