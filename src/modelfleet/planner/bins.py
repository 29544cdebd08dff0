"""An instance being packed: its type, isolation group, models and load (shared by the packers), and
the fleet's limits on instance counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelfleet.planner.problem import Int64Array, Problem


@dataclass(slots=True)
class Bin:
    type: int
    group: int
    members: list[int]
    load: Int64Array  # [D] on its type


def pad(problem: Problem, bins: list[Bin]) -> list[Bin]:
    """Empty instances up to the per-type and total minimums (cheapest first for the total)."""
    counts = np.bincount([b.type for b in bins], minlength=problem.n_types)
    zero = np.zeros(problem.capacity.shape[1], dtype=np.int64)
    for t in range(problem.n_types):
        bins += [Bin(t, 0, [], zero.copy()) for _ in range(int(problem.min_per_type[t] - counts[t]))]
    counts = np.bincount([b.type for b in bins], minlength=problem.n_types)
    for t in np.argsort(problem.prices).tolist():
        limit = problem.type_limit(t)
        while len(bins) < problem.min_total and (limit is None or counts[t] < limit):
            bins.append(Bin(t, 0, [], zero.copy()))
            counts[t] += 1
    return bins


def within_limits(problem: Problem, bins: list[Bin]) -> bool:
    """Do the instances keep the fleet's limits on counts (total and per type)?"""
    counts = np.bincount([b.type for b in bins], minlength=problem.n_types)
    if problem.max_total is not None and len(bins) > problem.max_total:
        return False
    return bool((counts >= problem.min_per_type).all()) and len(bins) >= problem.min_total
