"""Brute force and quick search over a `Space`, given a function that measures one configuration.

The quick search is coordinate descent, as Triton's model analyzer does it: from the server's
default configuration, try one step up and down along each dimension and move to the best
neighbour while it raises the throughput within the SLO by more than `min_gain`; measured points
are never measured twice. A `measure` that raises KeyboardInterrupt ends either search; what was
measured is in `Searched.measurements`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from modelfleet.tune.schema import Measurement, Settings, Slo
from modelfleet.tune.sweep import Space

Measure = Callable[[Settings], Measurement]
MIN_GAIN = 0.02  # a move must raise throughput at the SLO by 2 %: below that it is noise


def score(measurement: Measurement, slo: Slo) -> float:
    """Throughput at the SLO: the best step within it, 0 when none was."""
    best = measurement.capacity(slo.p90_ms, slo.max_error_rate)
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
    space: Space, measure: Measure, slo: Slo, min_gain: float = MIN_GAIN, start: Settings | None = None
) -> Searched:
    """Coordinate descent from `start` (default: the space's start point)."""
    searched = Searched()
    seen: dict[Settings, float] = {}

    def visit(point: Settings) -> float:
        if point not in seen:
            m = measure(point)
            searched.measurements.append(m)
            seen[point] = score(m, slo)
        return seen[point]

    try:
        current = start if start is not None and start in space.grid() else space.start()
        current_score = visit(current)
        while True:
            scored = [(visit(p), p) for p in space.neighbours(current)]
            best_score, best = max(scored, key=lambda sp: sp[0], default=(0.0, current))
            if best_score <= current_score * (1 + min_gain) or best_score == 0:
                break
            current, current_score = best, best_score
    except KeyboardInterrupt:
        searched.interrupted = True
    return searched
