"""Bin completion for large items, fast enough for tens of thousands of them: instances that hold a
few models each (large models on an accelerator type: 3-6 per instance).

First-fit decreasing leaves 5-10 % of each such instance empty, and the CP-SAT knapsack per
instance (planner.fill) costs 0.05 s an instance, too slow for thousands. Here each instance takes
the largest item left, then the best completion among one, two or three more items (sizes on an
integer grid, sorted, searched with numpy's searchsorted), then whatever still fits. An item's size
is its largest fraction of the instance, rounded up: sizes adding up to the grid fit in every
dimension, so every instance is feasible by construction.
"""

from __future__ import annotations

import numpy as np

from modelfleet.planner.problem import FloatArray, Int64Array

GRID = 100_000  # units per instance
TRIPLE_STARTS = 32  # first items tried for three-item completions, spread over the sizes that fit


def pack_large(frac: FloatArray, limit: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Items (rows of `frac`, [n, D] fractions of one instance) into instances: the positions per
    instance, and the positions left over once `limit` instances are used."""
    size = np.ceil(frac.max(axis=1) * GRID - 1e-6).astype(np.int64)
    size = np.clip(size, 1, GRID)
    values, inverse = np.unique(size, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(values)))])
    pools = [order[bounds[k] : bounds[k + 1]].tolist() for k in range(len(values))]
    count = np.array([len(p) for p in pools], dtype=np.int64)
    bins: list[list[int]] = []
    while count.any():
        if limit is not None and len(bins) >= limit:
            break
        top = int(np.flatnonzero(count)[-1])
        chosen = [top]
        count[top] -= 1
        chosen += _complete(values, count, GRID - int(values[top]))
        bins.append([pools[k].pop() for k in chosen])
    left = [i for k in np.flatnonzero(count).tolist() for i in pools[k]]
    return bins, left


def _complete(values: Int64Array, count: Int64Array, room: int) -> list[int]:
    """Size classes (taken from `count`) of the fullest completion found for `room` grid units."""
    taken: list[int] = []
    while room > 0:
        best = _best(values, count, room)
        if not best:
            break
        for k in best:
            count[k] -= 1
        taken += best
        room -= int(values[best].sum())
    return taken


def _best(values: Int64Array, count: Int64Array, room: int) -> list[int]:
    """The best of one, two or three size classes (with multiplicity) that fit `room`."""
    avail = np.flatnonzero((count > 0) & (values <= room))
    if not avail.size:
        return []
    vals = values[avail]
    found: list[int] = [int(avail[-1])]
    best = int(vals[-1])
    pair = _best_pair(avail, vals, count, room)
    if pair is not None and pair[0] > best:
        best, found = pair
    if best < room:
        starts = np.unique(np.linspace(0, len(avail) - 1, min(TRIPLE_STARTS, len(avail))).astype(np.int64))
        for s in starts.tolist():
            k = int(avail[s])
            count[k] -= 1
            rest = np.flatnonzero((count > 0) & (values <= room - int(values[k])))
            inner = _best_pair(rest, values[rest], count, room - int(values[k])) if rest.size else None
            count[k] += 1
            if inner is not None and inner[0] + int(values[k]) > best:
                best, found = inner[0] + int(values[k]), [k, *inner[1]]
                if best == room:
                    break
    return found


def _best_pair(
    avail: Int64Array, vals: Int64Array, count: Int64Array, room: int
) -> tuple[int, list[int]] | None:
    """The fullest pair of size classes among `avail` (sorted, `vals` their sizes) within `room`."""
    partner = np.searchsorted(vals, room - vals, side="right") - 1
    # a class paired with itself needs two items of it; else step down to the next smaller class
    alone = (partner == np.arange(len(vals))) & (count[avail] < 2)
    partner = np.where(alone, partner - 1, partner)
    ok = partner >= 0
    if not ok.any():
        return None
    total = np.where(ok, vals + vals[np.maximum(partner, 0)], -1)
    i = int(np.argmax(total))
    return int(total[i]), [int(avail[i]), int(avail[partner[i]])]
