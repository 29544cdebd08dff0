"""The figures of a run: throughput, latency percentiles, errors, and the busiest models.

Client processes send raw latency arrays; they are concatenated here, so percentiles are exact
(nearest rank) rather than merged from per-process estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from modelfleet.bench.messages import ShareResult

if TYPE_CHECKING:  # openstats and series build on this module
    from modelfleet.bench.openstats import OpenLoopFigures
    from modelfleet.bench.series import ClosedLoopFigures

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


def merge(results: list[ShareResult], models: list[str], duration_s: float, top: int) -> BenchResult:
    """One result from every client process's share."""
    latencies = np.concatenate([np.frombuffer(r.latencies_ns, dtype="<i8") for r in results])
    indexes = np.concatenate([np.frombuffer(r.model_indexes, dtype="<i4") for r in results])
    errors: dict[str, int] = {}
    model_errors = np.zeros(len(models), dtype=np.int64)
    for r in results:
        for kind, count in r.errors.items():
            errors[kind] = errors.get(kind, 0) + count
        for index, count in r.model_errors.items():
            model_errors[index] += count
    counts = np.bincount(indexes, minlength=len(models))
    rows = []
    if len(models) > 1:
        busiest = np.argsort(-(counts + model_errors), kind="stable")[:top]
        for index in busiest.tolist():
            if counts[index] + model_errors[index] == 0:
                break
            rows.append(
                ModelRow(
                    model=models[index],
                    requests=int(counts[index]),
                    requests_per_s=float(counts[index]) / duration_s,
                    errors=int(model_errors[index]),
                    latency=LatencySummary.of(latencies[indexes == index]),
                )
            )
    return BenchResult(
        duration_s=duration_s,
        requests=len(latencies),
        requests_per_s=len(latencies) / duration_s,
        latency=LatencySummary.of(latencies),
        errors=dict(sorted(errors.items())),
        warmup_errors=sum(r.warmup_errors for r in results),
        models_hit=int(np.count_nonzero(counts + model_errors)),
        top_models=rows,
        client_processes=len(results),
        client_cpu_s=sum(r.cpu_s for r in results),
    )
