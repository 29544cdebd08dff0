"""Fleet-spec models that reference a `profile.json` (written by `modelfleet profile`, issue 13):
their capacity, memory and service time read from what was measured.

Per profile: the configuration (at one sequence length) with the highest capacity within the SLO
times the profile's margin, at the SLO's percentile, read by the rule `modelfleet recommend` reads
(`modelfleet.tune.best_measurement`: the final long steps first, the knee of the ramp) is the
capacity on the profiled instance type; its server's PSS is the memory; its P50 at concurrency 1,
the service time; its max_batch_size, the batching the simulation uses. Declared numbers in the spec
win over the profile's.
"""

from __future__ import annotations

from pathlib import Path

from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec, ProfileRef
from modelfleet.tune import (
    Measurement,
    Percentile,
    Profile,
    Step,
    TuneInputError,
    best_measurement,
    load_profile,
)

_PERCENTILES: dict[float, Percentile] = {50.0: 50, 90.0: 90, 99.0: 99}


def resolve_profiles(spec: FleetSpec, spec_path: Path) -> FleetSpec:
    """`spec` with each profile-referencing model's capacity and memory filled in from its profile."""
    if not any(entry.profile is not None for entry in spec.models):
        return spec
    models = [
        entry if entry.profile is None else _resolve(entry, entry.profile, spec, spec_path)
        for entry in spec.models
    ]
    return spec.model_copy(update={"models": models})


def _resolve(entry: ModelSpec, ref: ProfileRef, spec: FleetSpec, spec_path: Path) -> ModelSpec:
    label = entry.name or entry.pattern
    where = f"fleet spec {spec_path}: model '{label}': profile {ref.path}"
    profile = _read(spec_path.parent / ref.path, where)
    instance_type = ref.instance_type or profile.instance_type
    if instance_type is None:
        raise PlanInputError(
            f"{where}: no instance type: the profile names none (profile --instance-type); give profile.instance_type"
        )
    percentile, limit_ms = _slo(spec, profile, where)
    measurement, step = _capacity(profile, ref.seq_len, percentile, limit_ms, where)
    latency = step.latency_ms(percentile)
    single = next((s for s in measurement.steps if s.concurrency == 1 and s.p50_ms is not None), None)
    batch = measurement.settings.max_batch_size
    service_ms = single.p50_ms if single is not None else None
    capacity = dict(entry.capacity)
    capacity.setdefault(
        instance_type,
        Capacity(rps=step.throughput_per_s, latency_ms=latency, service_ms=service_ms, max_batch_size=batch),
    )
    per_core = step.throughput_per_s / profile.machine.nproc
    for other in ref.scale_to:
        capacity.setdefault(
            other,
            Capacity(rps_per_core=per_core, latency_ms=latency, service_ms=service_ms, max_batch_size=batch),
        )
    memory = entry.memory_bytes if entry.memory_bytes is not None else measurement.memory_bytes
    if memory is None:
        raise PlanInputError(
            f"{where}: the profile measured no memory for {measurement.config}; give memory_bytes"
        )
    return entry.model_copy(update={"capacity": capacity, "memory_bytes": memory})


def _read(path: Path, where: str) -> Profile:
    try:
        return load_profile(path)
    except TuneInputError as exc:
        raise PlanInputError(f"{where}: {exc}") from None


def _slo(spec: FleetSpec, profile: Profile, where: str) -> tuple[Percentile, float]:
    """The percentile and the limit the capacity is read at: the fleet's SLO, else the profile's,
    times the profile's margin (`slo.margin`, as `modelfleet recommend` counts capacity)."""
    if spec.slo is None:
        return 90, profile.slo.bound_ms
    percentile = _PERCENTILES.get(spec.slo.percentile)
    if percentile is None:
        raise PlanInputError(
            f"{where}: profiles record P50, P90 and P99; the fleet's SLO is at P{spec.slo.percentile:g}"
        )
    return percentile, spec.slo.latency_ms * profile.slo.margin


def _capacity(
    profile: Profile, seq_len: int | None, percentile: Percentile, limit_ms: float, where: str
) -> tuple[Measurement, Step]:
    lengths = sorted({m.seq_len for m in profile.measurements})
    if not lengths:
        raise PlanInputError(f"{where}: the profile holds no measurement")
    chosen = seq_len if seq_len is not None else lengths[-1]
    if chosen not in lengths:
        raise PlanInputError(f"{where}: no measurement at seq_len {chosen} (measured: {lengths})")
    best = best_measurement(profile.measurements, chosen, limit_ms, profile.slo.max_error_rate, percentile)
    if best is None:
        raise PlanInputError(
            f"{where}: infeasible SLO: no configuration measured at seq_len {chosen} keeps "
            f"P{percentile} within {limit_ms:g} ms"
        )
    return best
