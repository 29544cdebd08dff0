"""The packing problem in numbers: a fleet spec resolved against a catalogue.

Every model replica must go on one instance; each instance type has a capacity in four dimensions
and each model a demand in each, per type (compute depends on how fast the type runs the model):

    MEMORY        host bytes                 capacity: memory x (1 - headroom)
    ACCELERATOR   device bytes               capacity: all devices' memory x (1 - headroom)
    COMPUTE       share of the instance's    capacity: COMPUTE_SCALE x (1 - headroom);
                  throughput at the SLO      demand: ceil(COMPUTE_SCALE x traffic per replica / rps)
    SLOTS         1 / models_per_instance    capacity: the lcm of the type's models_per_instance

All integers, so that the exact solver and the heuristic agree on what fits. Input errors raise
PlanInputError naming the models and the constraint.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from modelfleet.planner.catalog import Catalog, InstanceType
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec

COMPUTE_SCALE = 1_000_000
_SLOT_LCM_LIMIT = 10**12
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class Dim(enum.IntEnum):
    MEMORY = 0
    ACCELERATOR = 1
    COMPUTE = 2
    SLOTS = 3


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    family: str
    usd_per_hour: float  # after the spot discount
    price_verified: bool = True  # the catalogue's word on its price


@dataclass(slots=True)
class Problem:
    """Models x types x dimensions, plus the fleet-level limits. Arrays are read-only by convention."""

    types: list[TypeInfo]
    capacity: Int64Array  # [T, D]
    model_names: list[str]
    demand: Int64Array  # [M, T, D], per replica
    eligible: BoolArray  # [M, T]
    replicas: Int64Array  # [M]
    group: Int64Array  # [M], index into group_names
    group_names: list[str]
    traffic_rps: FloatArray  # [M]
    memory_bytes: FloatArray  # [M], for reports
    conflicts: dict[int, set[int]] = field(default_factory=dict)  # symmetric, never_with
    min_total: int = 0
    max_total: int | None = None
    min_per_type: Int64Array = field(default_factory=lambda: np.zeros(0, np.int64))
    max_per_type: Int64Array = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: none
    accel_cores: Int64Array = field(default_factory=lambda: np.zeros(0, np.int64))  # [T], 0: CPU type

    @property
    def n_models(self) -> int:
        return len(self.model_names)

    @property
    def n_types(self) -> int:
        return len(self.types)

    @property
    def prices(self) -> FloatArray:
        return np.array([t.usd_per_hour for t in self.types], dtype=np.float64)

    def fractions(self) -> FloatArray:
        """[M, T, D] demand as a fraction of each type's capacity (0 where the type has none)."""
        cap = np.where(self.capacity > 0, self.capacity, 1).astype(np.float64)
        return self.demand.astype(np.float64) / cap[None, :, :]

    def type_limit(self, t: int) -> int | None:
        limit = int(self.max_per_type[t])
        return None if limit < 0 else limit


def build_problem(spec: FleetSpec, catalog: Catalog) -> Problem:
    """Resolve `spec` against `catalog`, checking every reference and every model's fit."""
    by_name = catalog.by_name()
    _check_references(spec, catalog)
    types = _planned_types(spec, catalog)
    headroom = spec.options.headroom
    slot_scale = _slot_scales(spec, types)
    capacity = np.array(
        [_type_capacity(t, headroom, slot_scale[i]) for i, t in enumerate(types)], dtype=np.int64
    ).reshape(len(types), len(Dim))
    names: list[str] = []
    rows: list[Int64Array] = []
    elig_rows: list[BoolArray] = []
    replicas: list[int] = []
    groups: list[str] = []
    traffic: list[float] = []
    memory: list[float] = []
    for entry in spec.models:
        if entry.memory_bytes is None or not entry.capacity:
            raise PlanInputError(
                f"model {_label(entry)}: its profile was not read (load the spec with load_fleet_spec)"
            )
        demand, eligible = _entry_demand(entry, spec, types, capacity, slot_scale)
        entry_names = entry.names()
        names.extend(entry_names)
        rows.extend([demand] * len(entry_names))
        elig_rows.extend([eligible] * len(entry_names))
        replicas.extend([entry.replicas] * len(entry_names))
        groups.extend([entry.isolation_group or ""] * len(entry_names))
        traffic.extend([entry.traffic_rps] * len(entry_names))
        memory.extend([float(entry.memory_bytes)] * len(entry_names))
    group_names = sorted(set(groups))
    group_index = {g: i for i, g in enumerate(group_names)}
    problem = Problem(
        types=[
            TypeInfo(
                t.name,
                t.family,
                float(t.usd_per_hour or 0.0) * (1.0 - spec.options.spot_discount),
                t.price_verified,
            )
            for t in types
        ],
        capacity=capacity,
        model_names=names,
        demand=np.stack(rows).astype(np.int64),
        eligible=np.stack(elig_rows),
        replicas=np.array(replicas, dtype=np.int64),
        group=np.array([group_index[g] for g in groups], dtype=np.int64),
        group_names=group_names,
        traffic_rps=np.array(traffic, dtype=np.float64),
        memory_bytes=np.array(memory, dtype=np.float64),
        conflicts=_conflicts(spec, names),
        min_total=spec.options.min_instances,
        max_total=spec.options.max_instances,
        min_per_type=np.array([spec.options.min_per_type.get(t.name, 0) for t in types], dtype=np.int64),
        max_per_type=np.array([spec.options.max_per_type.get(t.name, -1) for t in types], dtype=np.int64),
        accel_cores=np.array([t.accelerators.total_cores if t.accelerators else 0 for t in types], np.int64),
    )
    _check_limits(problem, by_name)
    return problem


def with_max_total(problem: Problem, max_total: int | None) -> Problem:
    """The same problem under a (tighter) limit on the number of instances."""
    if max_total is None:
        return problem
    current = problem.max_total
    limit = max_total if current is None else min(current, max_total)
    clone = dataclasses.replace(problem, max_total=limit)
    _check_limits(clone, {})
    return clone


# --- references and limits -----------------------------------------------------------------------


def _check_references(spec: FleetSpec, catalog: Catalog) -> None:
    names = set(catalog.by_name())
    families = catalog.families()
    known = names | families
    opts = spec.options
    for key in [*opts.min_per_type, *opts.max_per_type, *(opts.instance_types or [])]:
        if key not in known and key not in names:
            raise PlanInputError(f"options: unknown instance type '{key}' (not in the catalogue)")
    for entry in spec.models:
        label = _label(entry)
        for key in entry.capacity:
            if key not in known:
                raise PlanInputError(
                    f"model {label}: capacity for unknown instance type or family '{key}' (not in the catalogue)"
                )
        if entry.family is not None:
            if entry.family not in families:
                raise PlanInputError(f"model {label}: pinned to unknown instance family '{entry.family}'")
            if not any(
                t.family == entry.family and (t.name in entry.capacity or t.family in entry.capacity)
                for t in catalog.types
            ):
                raise PlanInputError(
                    f"contradictory constraints: model {label} is pinned to family '{entry.family}' "
                    f"but declares capacity for no {entry.family} type"
                )


def _planned_types(spec: FleetSpec, catalog: Catalog) -> list[InstanceType]:
    """The catalogue types some model declares a capacity for (and the options allow)."""
    allowed = spec.options.instance_types
    used: list[InstanceType] = []
    for t in catalog.types:
        if allowed is not None and t.name not in allowed and t.family not in allowed:
            continue
        users = [e for e in spec.models if t.name in e.capacity or t.family in e.capacity]
        if not users:
            continue
        if t.usd_per_hour is None:
            labels = ", ".join(_label(e) for e in users[:3])
            raise PlanInputError(
                f"instance type '{t.name}' has no price in the catalogue (models {labels} declare a "
                "capacity for it): add usd_per_hour, or leave it out with options.instance_types"
            )
        used.append(t)
    if not used:
        raise PlanInputError(
            "no instance type of the catalogue is both allowed and named in a model's capacity"
        )
    return used


def _check_limits(problem: Problem, by_name: dict[str, InstanceType]) -> None:
    del by_name
    lo, hi = problem.min_total, problem.max_total
    if hi is not None and lo > hi:
        raise PlanInputError(f"contradictory constraints: min_instances {lo} > max_instances {hi}")
    for t, info in enumerate(problem.types):
        low, high = int(problem.min_per_type[t]), problem.type_limit(t)
        if high is not None and low > high:
            raise PlanInputError(
                f"contradictory constraints: min_per_type[{info.name}] {low} > max_per_type[{info.name}] {high}"
            )
    if hi is not None and int(problem.min_per_type.sum()) > hi:
        raise PlanInputError(
            f"contradictory constraints: the per-type minimums add up to {int(problem.min_per_type.sum())} "
            f"instances, more than max_instances {hi}"
        )
    if hi is not None and len(problem.group_names) > hi:
        raise PlanInputError(
            f"contradictory constraints: {len(problem.group_names)} isolation groups need at least as many "
            f"instances, but max_instances is {hi}"
        )
    if hi is not None and problem.n_models and int(problem.replicas.max()) > hi:
        worst = problem.model_names[int(problem.replicas.argmax())]
        raise PlanInputError(
            f"contradictory constraints: model '{worst}' wants {int(problem.replicas.max())} replicas on "
            f"distinct instances, but max_instances is {hi}"
        )
    bounded = [problem.type_limit(t) for t in range(problem.n_types)]
    for m in np.flatnonzero(problem.replicas > 1):
        room = sum(
            math.inf if bounded[t] is None else bounded[t] or 0 for t in np.flatnonzero(problem.eligible[m])
        )
        if room < problem.replicas[m]:
            raise PlanInputError(
                f"contradictory constraints: model '{problem.model_names[m]}' wants {problem.replicas[m]} "
                f"replicas on distinct instances, but max_per_type allows only {room} instances of its types"
            )


def _conflicts(spec: FleetSpec, names: Sequence[str]) -> dict[int, set[int]]:
    index = {n: i for i, n in enumerate(names)}
    by_pattern = {e.pattern: e.names() for e in spec.models if e.pattern is not None}
    conflicts: dict[int, set[int]] = {}
    for entry in spec.models:
        if not entry.never_with:
            continue
        others: list[int] = []
        for ref in entry.never_with:
            if ref in index:
                others.append(index[ref])
            elif ref in by_pattern:
                others.extend(index[n] for n in by_pattern[ref])
            else:
                raise PlanInputError(f"model {_label(entry)}: never_with names unknown model '{ref}'")
        for name in entry.names():
            me = index[name]
            for other in others:
                if other == me:
                    raise PlanInputError(
                        f"contradictory constraints: model '{name}' is listed in its own never_with"
                    )
                conflicts.setdefault(me, set()).add(other)
                conflicts.setdefault(other, set()).add(me)
    return conflicts


# --- capacities and demands ----------------------------------------------------------------------


def capacity_for(entry: ModelSpec, t: InstanceType) -> Capacity | None:
    return entry.capacity.get(t.name) or entry.capacity.get(t.family)


def _slot_scales(spec: FleetSpec, types: Sequence[InstanceType]) -> list[int]:
    scales: list[int] = []
    for t in types:
        lcm = 1
        for entry in spec.models:
            cap = capacity_for(entry, t)
            if cap is not None and cap.models_per_instance is not None:
                lcm = math.lcm(lcm, cap.models_per_instance)
                if lcm > _SLOT_LCM_LIMIT:
                    lcm = 10**9  # demands are rounded up: never more models than measured
                    break
        scales.append(lcm)
    return scales


def _type_capacity(t: InstanceType, headroom: float, slot_scale: int) -> list[int]:
    acc = t.accelerators.total_memory_bytes if t.accelerators is not None else 0
    return [
        math.floor(t.memory_bytes * (1.0 - headroom)),
        math.floor(acc * (1.0 - headroom)),
        math.floor(COMPUTE_SCALE * (1.0 - headroom)),
        slot_scale,
    ]


def _entry_demand(
    entry: ModelSpec,
    spec: FleetSpec,
    types: Sequence[InstanceType],
    capacity: Int64Array,
    slot_scale: Sequence[int],
) -> tuple[Int64Array, BoolArray]:
    """One entry's [T, D] demand per replica and [T] eligibility; no eligible type is an error."""
    demand = np.zeros((len(types), len(Dim)), dtype=np.int64)
    eligible = np.zeros(len(types), dtype=bool)
    reasons: list[tuple[str, str, str]] = []  # (type, kind, text)
    headroom = spec.options.headroom
    per_replica_rps = entry.traffic_rps / entry.replicas
    for i, t in enumerate(types):
        cap = capacity_for(entry, t)
        if cap is None or (entry.family is not None and t.family != entry.family):
            continue
        row, why = _demand_on(entry, cap, t, headroom, per_replica_rps, slot_scale[i], spec)
        demand[i] = row
        if why is None and bool(np.all(row <= capacity[i])):
            eligible[i] = True
        elif why is not None:
            reasons.append((t.name, why[0], why[1]))
        else:
            over = [Dim(d).name.lower() for d in range(len(Dim)) if row[d] > capacity[i, d]]
            reasons.append((t.name, "size", f"{', '.join(over)} over the instance's"))
    if not eligible.any():
        raise PlanInputError(_no_type_message(entry, reasons))
    return demand, eligible


def _demand_on(
    entry: ModelSpec,
    cap: Capacity,
    t: InstanceType,
    headroom: float,
    per_replica_rps: float,
    slot_scale: int,
    spec: FleetSpec,
) -> tuple[list[int], tuple[str, str] | None]:
    slo = spec.slo
    why: tuple[str, str] | None = None
    if slo is not None and cap.latency_ms is not None and cap.latency_ms > slo.latency_ms:
        why = ("slo", f"latency {cap.latency_ms:g} ms > SLO {slo.latency_ms:g} ms")
    assert entry.memory_bytes is not None  # checked by build_problem
    if t.memory_bytes * (1.0 - headroom) < entry.memory_bytes:
        why = why or ("size", f"memory {_gib(entry.memory_bytes)} > {_gib(t.memory_bytes * (1 - headroom))}")
    acc_bytes = 0
    if t.accelerators is not None and entry.accelerator_memory_bytes:
        per_core = t.accelerators.memory_per_core_bytes * (1.0 - headroom)
        if entry.accelerator_memory_bytes > per_core:
            why = why or (
                "size",
                f"accelerator memory {_gib(entry.accelerator_memory_bytes)} > one core's {_gib(per_core)}",
            )
        acc_bytes = entry.accelerator_memory_bytes
    rps = cap.rps if cap.rps is not None else (cap.rps_per_core * t.cores if cap.rps_per_core else None)
    compute = 0
    if rps is not None and per_replica_rps > 0:
        compute = math.ceil(COMPUTE_SCALE * per_replica_rps / rps)
        # a copy on an accelerator runs on one of its cores: it gets that core's share of the throughput
        one = rps / t.accelerators.total_cores if t.accelerators is not None else rps
        where = "one accelerator core serves" if t.accelerators is not None else "one instance serves"
        if per_replica_rps > one * (1.0 - headroom):
            why = why or (
                "slo",
                f"needs {per_replica_rps:g} req/s per replica, {where} {one * (1 - headroom):g} within the SLO",
            )
    slots = slot_scale // cap.models_per_instance if cap.models_per_instance else 0
    if cap.models_per_instance and slot_scale % cap.models_per_instance:
        slots += 1
    return [entry.memory_bytes, acc_bytes, compute, slots], why


def _no_type_message(entry: ModelSpec, reasons: list[tuple[str, str, str]]) -> str:
    label = _label(entry)
    detail = "; ".join(f"{t}: {text}" for t, _, text in reasons) or "no capacity on an allowed type"
    kinds = {kind for _, kind, _ in reasons}
    if kinds == {"size"}:
        return f"model {label} is larger than every instance type it may use: {detail}"
    if "slo" in kinds:
        return f"infeasible SLO for model {label}: no instance type meets it: {detail}"
    return f"model {label}: no instance type can host it: {detail}"


def _label(entry: ModelSpec) -> str:
    if entry.name is not None:
        return f"'{entry.name}'"
    return f"'{entry.pattern}' ({entry.count} models)"


def _gib(value: float) -> str:
    return f"{value / 2**30:.3g} GiB"
