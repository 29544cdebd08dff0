"""The fleet spec: the models to host, their sizes, capacities and traffic, the SLO and the options.

Read from YAML (`load_fleet_spec`) at the CLI edge; everything below takes a `FleetSpec`.
See docs/plan.md for an annotated example.
"""

from __future__ import annotations

import string
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelfleet.planner.yamlfile import load_yaml_model


class Capacity(BaseModel):
    """What one instance of a type (or of a family) does for this model at the SLO.

    Give one or more of: `models_per_instance` (a measured packing, as in seed 002's table; taken as
    is, without headroom), `rps` (requests/s one instance serves within the SLO) or `rps_per_core`
    (the same per accelerator core, or per vCPU on a CPU type). `latency_ms` is the latency measured
    at that throughput; above the SLO the type is not used for this model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models_per_instance: int | None = Field(default=None, ge=1)
    rps: float | None = Field(default=None, gt=0)
    rps_per_core: float | None = Field(default=None, gt=0)
    latency_ms: float | None = Field(default=None, gt=0)
    service_ms: float | None = Field(default=None, gt=0)
    """Time one request alone takes on one core (a batch of one); default: cores / rps."""
    max_batch_size: int = Field(default=1, ge=1)
    """Requests of this model one core runs together (the simulation's dynamic batching)."""
    batch_item_ms: float | None = Field(default=None, ge=0)
    """Time each request after the first adds to a batch (simulation); default: what makes full
    batches sustain `rps`."""
    batch_ms: dict[int, float] | None = None
    """Measured time of a batch by size (e.g. {1: 12.1, 4: 30.5, 16: 95}) for the simulation; sizes
    in between on straight lines. Wins over `service_ms` and `batch_item_ms`."""
    service_cv: float = Field(default=0.0, ge=0, le=4)
    """How much a batch's time varies (standard deviation / mean; simulation); 0: not at all."""
    overhead_ms: float = Field(default=0.0, ge=0)
    """Time a request spends outside its batch (network, front proxy, the server reading and
    answering it): added to its latency, not to the core's work (simulation)."""

    @field_validator("batch_ms")
    @classmethod
    def _batch_sizes(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value is not None:
            if not value:
                raise ValueError("batch_ms needs at least one batch size and its time")
            bad = [f"{k}: {v}" for k, v in value.items() if k < 1 or not v > 0]
            if bad:
                raise ValueError(
                    f"batch_ms: sizes must be at least 1 and times above 0 ms, got {', '.join(bad)}"
                )
        return value


class ProfileRef(BaseModel):
    """A `profile.json` written by `modelfleet profile` (issue 13), standing for declared numbers.

    The capacity on `instance_type` is the best configuration's capacity step within the fleet's SLO
    (the knee of its ramp at the SLO's percentile, `modelfleet.tune.capacity_step`, as `recommend`
    reads it), the memory its server's PSS, the service time its P50 at concurrency 1. `scale_to` extrapolates the throughput per CPU of the profiled machine to more
    types or families (`rps_per_core` = throughput / the machine's CPUs).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """The profile.json, relative to the fleet spec's folder."""
    instance_type: str | None = None
    """The catalogue type the profiled machine stands for; default: the profile's own `instance_type`."""
    scale_to: list[str] = Field(default_factory=list)
    """More instance types or families to give a per-core capacity from the profile."""
    seq_len: int | None = Field(default=None, ge=1)
    """The sequence length to read; default: the longest measured (the slowest)."""


class ModelSpec(BaseModel):
    """One model, or `count` models named by `pattern` (`bert-{i:04d}`) that share these numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    pattern: str | None = None
    """A str.format pattern with one field `i` (0 .. count-1); use with `count`."""
    count: int = Field(default=1, ge=1)
    start: int = Field(default=0, ge=0)
    """The first `i` of `pattern`."""
    memory_bytes: int | None = Field(default=None, ge=0)
    """Host memory one loaded copy takes (with a profile: its PSS unless given here)."""
    accelerator_memory_bytes: int = Field(default=0, ge=0)
    """Device memory one copy takes on a type with accelerators (it must fit one core's share)."""
    traffic_rps: float = Field(default=0.0, ge=0)
    """Expected requests/s to this model (each of a pattern's models), spread over its replicas."""
    replicas: int = Field(default=1, ge=1)
    """Copies, each on a different instance."""
    isolation_group: str | None = None
    """Instances host models of one isolation group only (models without one form their own group)."""
    never_with: list[str] = Field(default_factory=list)
    """Names (or patterns' names) of models that may not share an instance with this one."""
    family: str | None = None
    """Pin to one instance family, e.g. `inf1`."""
    shared_base: str | None = None
    """The base model these are adapters over: a server batches the requests of all models with the
    same base together (the simulation does too)."""
    capacity: dict[str, Capacity] = Field(default_factory=dict)
    """Per instance type or family name; the model runs only on the types listed here."""
    profile: ProfileRef | None = None
    """A profile recorded by `modelfleet profile` (a path, or a mapping) instead of, or besides,
    `capacity`; a type declared in `capacity` keeps the declared numbers."""

    @field_validator("profile", mode="before")
    @classmethod
    def _profile_path(cls, value: object) -> object:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _named(self) -> ModelSpec:
        if (self.name is None) == (self.pattern is None):
            raise ValueError("give exactly one of name and pattern")
        if self.name is not None and self.count != 1:
            raise ValueError("count goes with pattern; a named model is one model")
        if self.pattern is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.pattern) if f is not None}
            if fields != {"i"}:
                raise ValueError(f"pattern '{self.pattern}' must have exactly one field {{i}}")
        if self.profile is None and not self.capacity:
            raise ValueError("give capacity (per instance type or family), or a profile")
        if self.profile is None and self.memory_bytes is None:
            raise ValueError("give memory_bytes, or a profile that measured it")
        return self

    def names(self) -> list[str]:
        if self.name is not None:
            return [self.name]
        assert self.pattern is not None
        return [self.pattern.format(i=i) for i in range(self.start, self.start + self.count)]


class Slo(BaseModel):
    """The latency objective the capacities were measured against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(gt=0)
    percentile: float = Field(default=90.0, gt=0, le=100)


class Options(BaseModel):
    """Prices, headroom and limits on the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spot_discount: float = Field(default=0.0, ge=0, lt=1)
    """Fraction off the on-demand price (0.6 = pay 40 %)."""
    headroom: float = Field(default=0.0, ge=0, lt=1)
    """Fraction of each instance's memory and compute left free (Mmax, Cmax = 1 - headroom)."""
    min_instances: int = Field(default=0, ge=0)
    max_instances: int | None = Field(default=None, ge=1)
    min_per_type: dict[str, int] = Field(default_factory=dict)
    max_per_type: dict[str, int] = Field(default_factory=dict)
    instance_types: list[str] | None = None
    """Plan with these catalogue types (or families) only."""


class FleetSpec(BaseModel):
    """A fleet to plan: the SLO, the models and the options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    slo: Slo | None = None
    models: list[ModelSpec] = Field(min_length=1)
    options: Options = Field(default_factory=Options)

    @model_validator(mode="after")
    def _unique_names(self) -> FleetSpec:
        seen: set[str] = set()
        for entry in self.models:
            for name in entry.names():
                if name in seen:
                    raise ValueError(f"model '{name}' is declared twice")
                seen.add(name)
        return self


def load_fleet_spec(path: Path) -> FleetSpec:
    """The spec at `path`, with its models' profiles (paths relative to its folder) read in."""
    from modelfleet.planner.profiles import resolve_profiles

    return resolve_profiles(load_yaml_model(path, FleetSpec, "fleet spec"), path)
