"""A closed-loop run over time: per second (answers, errors, percentiles, users) and per user phase,
from the completion times every client process sends back; and the cost of an inference.
"""

from __future__ import annotations

import math

import numpy as np

from modelfleet.bench.figures import ClosedLoopFigures, ClosedSecond, LatencySummary, UserPhaseFigures
from modelfleet.bench.messages import ShareResult
from modelfleet.bench.spec import UserPhase, users_at

__all__ = ["ClosedLoopFigures", "closed_figures", "cost_per_million"]  # the types: figures.py

SECOND_NS = 1_000_000_000


def closed_figures(results: list[ShareResult], phases: tuple[UserPhase, ...]) -> ClosedLoopFigures:
    """Per second and per phase, from every process's answers (phases as the spec gave them)."""
    done = np.concatenate([np.frombuffer(r.done_ns, dtype="<i8") for r in results])
    latencies = np.concatenate([np.frombuffer(r.latencies_ns, dtype="<i8") for r in results])
    error_times = np.concatenate([np.frombuffer(r.error_times_ns, dtype="<i8") for r in results])
    recorded_s = max((r.recorded_s for r in results), default=0.0)
    stopped = next((r.stopped for r in results if r.stopped is not None), None)
    seconds = max(1, math.ceil(recorded_s - 1e-9))
    second_of = np.minimum(done // SECOND_NS, seconds - 1)
    errors_per_second = np.bincount(
        np.minimum(error_times // SECOND_NS, seconds - 1).astype(np.int64), minlength=seconds
    )
    series = []
    for t in range(seconds):
        in_second = latencies[second_of == t]
        summary = LatencySummary.of(in_second)
        series.append(
            ClosedSecond(
                t,
                round(min(1.0, recorded_s - t), 3) if recorded_s > t else 1.0,
                users_at(phases, t),
                len(in_second),
                int(errors_per_second[t]),
                summary.p50_ms,
                summary.p90_ms,
                summary.p99_ms,
            )
        )
    figures, start = [], 0.0
    for phase in phases:
        if start >= recorded_s:
            break
        end = min(start + phase.duration_s, recorded_s)
        inside = (done >= start * SECOND_NS) & (done < end * SECOND_NS)
        errors = int(np.count_nonzero((error_times >= start * SECOND_NS) & (error_times < end * SECOND_NS)))
        length = end - start
        figures.append(
            UserPhaseFigures(
                start_s=round(start, 3),
                duration_s=round(length, 3),
                users_from=phase.initial_users,
                users_to=phase.users_at(length),
                ok=int(np.count_nonzero(inside)),
                errors=errors,
                throughput_per_s=float(np.count_nonzero(inside)) / length if length > 0 else math.nan,
                latency=LatencySummary.of(latencies[inside]),
            )
        )
        start += phase.duration_s
    return ClosedLoopFigures(round(recorded_s, 3), series, figures, stopped)


def cost_per_million(usd_per_hour: float, inferences_per_s: float) -> float:
    """$ per million inferences for a machine at `usd_per_hour` answering `inferences_per_s`."""
    if inferences_per_s <= 0:
        return math.inf
    return usd_per_hour / (inferences_per_s * 3600.0) * 1e6
