"""The figures of an open-loop run: outcomes per status, per phase and per second.

A request belongs to the phase it was scheduled in: its status and latency count there. Goodput
and the per-second series count answers by when they arrived (and sends by when they left), so
they show throughput as the server delivered it: a backlog drained after an overload shows as
late answers, not as early ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from modelfleet.bench.client import ErrorKind, http_error
from modelfleet.bench.figures import (
    BenchResult,
    LatencySummary,
    OpenLoopFigures,
    OpenSecond,
    Outcomes,
    percentile,
)
from modelfleet.bench.messages import OpenShareResult, ShareResult
from modelfleet.bench.openloop import FAILURE_CODES
from modelfleet.bench.schedule import phase_bounds_ns
from modelfleet.bench.spec import BenchSpec, Phase
from modelfleet.bench.stats import merge

__all__ = ["REFUSED", "OpenLoopFigures", "Outcomes", "Records", "merge_open"]  # the types: figures.py

REFUSED = 429  # the status of a request the server turned away (queue full)
FAILURE_NAMES: dict[int, str] = {code: str(kind) for kind, code in FAILURE_CODES.items()}
SATURATED = FAILURE_CODES[ErrorKind.SATURATED]
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Records:
    """All shares' requests of the window, one array entry per request."""

    scheduled: np.ndarray
    lag: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    model: np.ndarray

    @classmethod
    def concat(cls, results: list[OpenShareResult]) -> Records:
        def column(name: str, dtype: str) -> np.ndarray:
            return np.concatenate([np.frombuffer(getattr(r, name), dtype=dtype) for r in results])

        return cls(
            column("scheduled_ns", "<i8"),
            column("lag_ns", "<i8"),
            column("latency_ns", "<i8"),
            column("statuses", "<i2").astype(np.int32),
            column("model_indexes", "<i4"),
        )

    @property
    def ok(self) -> np.ndarray:
        mask: np.ndarray = (self.status >= 200) & (self.status < 300)
        return mask

    def outcomes(self, start_ns: int, end_ns: int, rate_per_s: float) -> Outcomes:
        inside = (self.scheduled >= start_ns) & (self.scheduled < end_ns)
        status = self.status[inside]
        ok = self.ok[inside]
        duration_s = (end_ns - start_ns) / NS_PER_S
        codes, counts = np.unique(status, return_counts=True)
        by_code = dict(zip(codes.tolist(), counts.tolist(), strict=True))
        scheduled = int(inside.sum())
        sent = scheduled - by_code.get(SATURATED, 0)
        latency = self.latency[inside]
        done = self.scheduled + self.latency
        # a client that falls behind stretches its sends past the window's end
        last_send_ns = int((self.scheduled[inside] + self.lag[inside]).max()) if scheduled else end_ns
        sending_s = max(end_ns, last_send_ns) / NS_PER_S - start_ns / NS_PER_S
        return Outcomes(
            start_s=start_ns / NS_PER_S,
            duration_s=duration_s,
            rate_per_s=rate_per_s,
            scheduled=scheduled,
            sent=sent,
            send_rate_per_s=sent / sending_s,
            ok=int(ok.sum()),
            goodput_per_s=int(((done >= start_ns) & (done < end_ns) & self.ok).sum()) / duration_s,
            statuses={str(c): n for c, n in sorted(by_code.items()) if c > 0},
            failures=dict(sorted((FAILURE_NAMES[c], n) for c, n in by_code.items() if c < 0)),
            ok_latency=LatencySummary.of(latency[ok]),
            refused_latency=LatencySummary.of(latency[status == REFUSED]),
        )

    def series(self, window_ns: int) -> list[OpenSecond]:
        """Per-second counts from the window's start until the last request ended."""
        sent_at = (self.scheduled + self.lag) // NS_PER_S
        done_at = (self.scheduled + self.latency) // NS_PER_S
        due_at = self.scheduled // NS_PER_S
        last = int(done_at.max()) + 1 if len(done_at) else 0
        seconds = max(math.ceil(window_ns / NS_PER_S), last)
        saturated = self.status == SATURATED
        ok, refused = self.ok, self.status == REFUSED

        def count(at: np.ndarray, mask: np.ndarray) -> list[int]:
            counts: list[int] = np.bincount(at[mask], minlength=seconds).tolist()
            return counts

        sent = count(sent_at, ~saturated)
        oks, refusals = count(done_at, ok), count(done_at, refused)
        failed = count(done_at, ~(ok | refused | saturated))
        saturations = count(due_at, saturated)
        p99 = _p99_by_second(done_at[ok], self.latency[ok], seconds)
        return [
            OpenSecond(t, sent[t], oks[t], refusals[t], failed[t], saturations[t], p99[t])
            for t in range(seconds)
        ]


def _p99_by_second(second: np.ndarray, latency_ns: np.ndarray, seconds: int) -> list[float]:
    """Nearest-rank P99 in ms of the latencies in each second, one sort for all of them."""
    order = np.lexsort((latency_ns, second))
    ordered = latency_ns[order]
    counts = np.bincount(second, minlength=seconds)
    starts = np.cumsum(counts) - counts
    result = []
    for t in range(seconds):
        n = int(counts[t])
        run = ordered[starts[t] : starts[t] + n]
        result.append(percentile(run, 99) / 1e6 if n else math.nan)
    return result


def _as_closed(records: Records, results: list[OpenShareResult], models: int) -> ShareResult:
    """The window's answers in the closed loop's shape, for the shared summary and model rows."""
    ok = records.ok
    codes, counts = np.unique(records.status[~ok], return_counts=True)
    errors = {
        http_error(code) if code > 0 else FAILURE_NAMES[code]: count
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True)
    }
    failed_models = np.bincount(records.model[~ok], minlength=models)
    return ShareResult(
        latencies_ns=records.latency[ok].astype("<i8").tobytes(),
        model_indexes=records.model[ok].astype("<i4").tobytes(),
        errors=errors,
        model_errors={i: int(n) for i, n in enumerate(failed_models.tolist()) if n},
        warmup_errors=sum(r.warmup_errors for r in results),
        cpu_s=sum(r.cpu_s for r in results),
    )


def merge_open(results: list[OpenShareResult], models: list[str], spec: BenchSpec) -> BenchResult:
    """One result from every client process's records: the closed loop's figures over the 2xx
    answers, plus the open loop's per-status, per-phase and per-second figures."""
    records = Records.concat(results)
    phases: tuple[Phase, ...] = spec.schedule
    bounds = phase_bounds_ns(phases)
    window_ns = bounds[-1][1]
    mean_rate = sum(p.rate_per_s * p.duration_s for p in phases) / spec.duration_s
    figures = OpenLoopFigures(
        arrivals=str(spec.arrivals),
        max_connections=spec.max_connections,
        peak_connections=sum(r.peak_connections for r in results),
        total=records.outcomes(0, window_ns, mean_rate),
        phases=[records.outcomes(b, e, p.rate_per_s) for p, (b, e) in zip(phases, bounds, strict=True)],
        series=records.series(window_ns),
        send_lag=LatencySummary.of(records.lag[records.status != SATURATED]),
    )
    closed = merge([_as_closed(records, results, len(models))], models, spec.duration_s, spec.top_models)
    return dataclasses.replace(closed, client_processes=len(results), open_loop=figures)
