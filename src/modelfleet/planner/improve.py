"""Local improvement of a packing: empty the least used instances into the others, merge pairs into
one cheaper instance, and move each instance to the cheapest type that holds its models; repeated
while the cost falls and time is left. Works on the Packer's per-model data (planner.heuristic).
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from modelfleet.planner.bins import Bin
from modelfleet.planner.cores import fits_cores
from modelfleet.planner.problem import FloatArray, Int64Array, Problem


class Packed(Protocol):
    """What the improvement reads of the packer (planner.heuristic.Packer): the problem, each model's
    fraction of each type per dimension, the prices, and which models need their group checked."""

    p: Problem
    frac: FloatArray
    prices: FloatArray
    special: np.ndarray

    def compatible(self, m: int, members: list[int]) -> bool: ...


class Improver:
    """The improvement passes over one problem's packings."""

    def __init__(self, packer: Packed) -> None:
        self.packer = packer
        self.p = packer.p
        self.frac = packer.frac
        self.prices = packer.prices
        self.special = packer.special

    def _compatible(self, m: int, members: list[int]) -> bool:
        return self.packer.compatible(m, members)

    def improve(self, bins: list[Bin], deadline: float) -> list[Bin]:
        before = np.inf
        while time.monotonic() < deadline:
            bins = self.downsize(bins)
            bins = self.drain(bins, deadline)
            bins = self.merge(bins, deadline)
            bins = self.downsize(bins)
            cost = self.cost(bins)
            if cost >= before - 1e-9:
                break
            before = cost
        return bins

    def cost(self, bins: list[Bin]) -> float:
        return float(sum(self.prices[b.type] for b in bins))

    def _counts(self, bins: list[Bin]) -> Int64Array:
        return np.bincount([b.type for b in bins], minlength=self.p.n_types).astype(np.int64)

    def _room(self, counts: Int64Array, t: int) -> bool:
        limit = self.p.type_limit(t)
        return limit is None or counts[t] < limit

    def _cheapest_type(self, members: list[int], counts: Int64Array, below: float) -> int | None:
        """The cheapest type (under `below` $/h, with room) that holds all of `members`."""
        p = self.p
        ok = p.eligible[members].all(axis=0)
        load = p.demand[members].sum(axis=0)  # [T, D]
        ok &= (load <= p.capacity).all(axis=1)
        best, best_price = None, below
        for t in np.flatnonzero(ok).tolist():
            if self.prices[t] < best_price - 1e-12 and self._room(counts, t) and fits_cores(p, t, members):
                best, best_price = t, float(self.prices[t])
        return best

    def downsize(self, bins: list[Bin]) -> list[Bin]:
        counts = self._counts(bins)
        if int(self.p.min_per_type.max(initial=0)) > 0:
            return bins  # keep it simple: per-type floors are met by the packing as it is
        for b in bins:
            t = self._cheapest_type(b.members, counts, float(self.prices[b.type]))
            if t is not None:
                counts[b.type] -= 1
                counts[t] += 1
                b.type = t
                b.load = self.p.demand[b.members, t, :].sum(axis=0)
        return bins

    def drain(self, bins: list[Bin], deadline: float) -> list[Bin]:
        """Empty the least-used instances into the others (best fit), least used first."""
        if len(bins) - 1 < self.p.min_total:
            return bins
        p = self.p
        types = np.array([b.type for b in bins], dtype=np.int64)
        groups = np.array([b.group for b in bins], dtype=np.int64)
        loads = np.stack([b.load for b in bins])
        residual = p.capacity[types] - loads
        alive = np.ones(len(bins), dtype=bool)
        fill = (loads / np.where(p.capacity[types] > 0, p.capacity[types], 1)).max(axis=1)
        counts = self._counts(bins)
        for victim in np.argsort(fill, kind="stable").tolist():
            if time.monotonic() > deadline or int(alive.sum()) - 1 < p.min_total:
                break
            if counts[types[victim]] - 1 < p.min_per_type[types[victim]]:
                continue
            moves = self._relocate(bins, victim, types, groups, residual, alive)
            if moves is None:
                continue
            for m, target in moves:
                bins[target].members.append(m)
                bins[target].load = bins[target].load + p.demand[m, types[target], :]
            alive[victim] = False
            counts[types[victim]] -= 1
        return [b for b, keep in zip(bins, alive, strict=True) if keep]

    def _relocate(
        self,
        bins: list[Bin],
        victim: int,
        types: Int64Array,
        groups: Int64Array,
        residual: Int64Array,
        alive: np.ndarray,
    ) -> list[tuple[int, int]] | None:
        p = self.p
        candidates = alive & (groups == groups[victim])
        candidates[victim] = False
        if not candidates.any():
            return None
        moves: list[tuple[int, int]] = []
        taken = residual.copy()
        members = sorted(bins[victim].members, key=lambda m: -self.frac[m, types[victim]].max())
        for m in members:
            need = p.demand[m, types, :]  # [B, D] on each bin's type
            ok = candidates & p.eligible[m, types] & (taken >= need).all(axis=1)
            slack = np.where(ok, (taken - need).min(axis=1), np.iinfo(np.int64).max)
            target = -1
            for b in np.argsort(slack, kind="stable")[: int(ok.sum())].tolist():
                others = bins[b].members + [x for x, tb in moves if tb == b]
                if self.special[m] and not self._compatible(m, others):
                    continue
                if fits_cores(p, int(types[b]), [*others, m]):
                    target = b
                    break
            if target < 0:
                return None
            moves.append((m, target))
            taken[target] -= need[target]
        residual[:] = taken
        return moves

    def merge(self, bins: list[Bin], deadline: float) -> list[Bin]:
        """Replace two instances by one cheaper instance that holds both (least used pairs first)."""
        if int(self.p.min_per_type.max(initial=0)) > 0 or len(bins) - 1 < self.p.min_total:
            return bins
        counts = self._counts(bins)
        order = sorted(range(len(bins)), key=lambda i: self._fullness(bins[i]))[:200]
        gone: set[int] = set()
        for x, i in enumerate(order):
            if time.monotonic() > deadline:
                break
            for j in order[x + 1 :]:
                if i in gone or j in gone or bins[i].group != bins[j].group:
                    continue
                members = bins[i].members + bins[j].members
                if len(set(members)) < len(members) or not self._compatible_all(members):
                    continue
                budget = float(self.prices[bins[i].type] + self.prices[bins[j].type])
                t = self._cheapest_type(members, counts, budget)
                if t is None:
                    continue
                counts[bins[i].type] -= 1
                counts[bins[j].type] -= 1
                counts[t] += 1
                bins[i] = Bin(t, bins[i].group, members, self.p.demand[members, t, :].sum(axis=0))
                gone.add(j)
        return [b for k, b in enumerate(bins) if k not in gone]

    def _compatible_all(self, members: list[int]) -> bool:
        if not self.p.conflicts:
            return True
        present = set(members)
        return all(self.p.conflicts.get(m, set()).isdisjoint(present) for m in members)

    def _fullness(self, b: Bin) -> float:
        cap = np.where(self.p.capacity[b.type] > 0, self.p.capacity[b.type], 1)
        return float((b.load / cap).max())
