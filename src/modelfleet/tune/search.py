"""Brute force and quick search over a `Space`, given a function that measures one configuration.

The quick search climbs as Triton's model analyzer does, from the server's default configuration
(or where it is told), one step along one dimension at a time, plus trades of cores between
instances and threads (`Space.moves`); it moves at the first move that raises the throughput
within the SLO by more than `min_gain`. Measured throughput is noisy (a configuration can measure
10-20 % apart in two runs), so once the climb stops, the untried moves of the runners-up within
`RUNNER_UP_SHARE` of the best are measured too: a point within the noise of the top may stand on
the slope of a higher peak. Measured points are never measured twice, and at most `budget`
points are measured (`quick_budget`: 45 % of the space, as Triton's optuna search caps its share
of the space). In replays of the eleven issue-13 brute-force runs (tests/unit/tune) budgets of 9,
11, 12 or 20 of the 20 points per length each reached 95 % of the best at 20 of the 22 lengths (10:
19, 8: 16), and with measurement noise added to the runs' mean surface the share that reaches 95 %
of brute force's choice was 0.71-0.76 for every budget from 8 to 20 (the noise decides, not the
budget; `benchmarks/quick_replay.py`). The climbs that go on are what make the quick search's time
vary: 24 points took 39 % of brute force's time (2026-12-06), over the 35 % it has. A `measure`
that raises KeyboardInterrupt ends either search; what was measured is in `Searched.measurements`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from modelfleet.tune.schema import Measurement, Settings, Slo
from modelfleet.tune.sweep import Space

Measure = Callable[[Settings], Measurement]
MIN_GAIN = 0.02  # a move must raise throughput at the SLO by 2 %: below that it is noise
RUNNERS_UP = 2
RUNNER_UP_SHARE = 0.9  # within 10 % of the best: as far apart as one configuration measures in two runs
BUDGET_SHARE = 0.45
"""The quick search measures at most this share of the space (at each sequence length)..."""
BUDGET_MIN = 8
"""...or this many points, if more: a small space is searched whole."""


class _Spent(Exception):
    """The quick search's budget is measured."""


def quick_budget(points: int) -> int:
    """How many of `points` configurations the quick search measures at most."""
    return min(points, max(math.ceil(points * BUDGET_SHARE), BUDGET_MIN))


def score(measurement: Measurement, slo: Slo) -> float:
    """Throughput at the SLO: the capacity step's (`schema.capacity_step`, the knee within the
    bound, margin x P90), 0 when no step was within it."""
    best = measurement.capacity(slo.bound_ms, slo.max_error_rate)
    return 0.0 if best is None else best.throughput_per_s


@dataclass
class Searched:
    measurements: list[Measurement] = field(default_factory=list)
    interrupted: bool = False

    def best(self, slo: Slo) -> Measurement | None:
        return max(self.measurements, key=lambda m: score(m, slo), default=None)


def brute(space: Space, measure: Measure) -> Searched:
    searched = Searched()
    try:
        for point in space.grid():
            searched.measurements.append(measure(point))
    except KeyboardInterrupt:
        searched.interrupted = True
    return searched


def quick(
    space: Space,
    measure: Measure,
    slo: Slo,
    min_gain: float = MIN_GAIN,
    start: Settings | None = None,
    budget: int | None = None,
) -> Searched:
    """First-improvement climb from `start` (default: the space's start point), then the
    runners-up's untried moves, until `budget` points are measured (default: `quick_budget`;
    see the module's docstring)."""
    searched = Searched()
    seen: dict[Settings, float] = {}
    limit = quick_budget(len(space.grid())) if budget is None else budget
    if limit < 1:
        raise ValueError(f"the quick search's budget must be at least 1 configuration, got {limit}")

    def visit(point: Settings) -> float:
        if point not in seen:
            if len(seen) >= limit:
                raise _Spent
            m = measure(point)
            searched.measurements.append(m)
            seen[point] = score(m, slo)
        return seen[point]

    try:
        current = start if start is not None and start in space.grid() else space.start()
        current_score = visit(current)
        moved = True
        while moved:
            moved = False
            for point in space.moves(current):
                found = visit(point)
                if found > 0 and found > current_score * (1 + min_gain):
                    current, current_score, moved = point, found, True
                    break
        for point in runners_up(seen, current):
            for move in space.moves(point):
                visit(move)
    except _Spent:
        pass
    except KeyboardInterrupt:
        searched.interrupted = True
    return searched


def runners_up(scores: dict[Settings, float], top: Settings) -> list[Settings]:
    """The next-best points after `top`, at most RUNNERS_UP of them, within RUNNER_UP_SHARE of the best."""
    best = max(scores.values(), default=0.0)
    ranked = sorted((p for p in scores if p != top), key=lambda p: scores[p], reverse=True)
    return [p for p in ranked[:RUNNERS_UP] if best > 0 and scores[p] >= best * RUNNER_UP_SHARE]
