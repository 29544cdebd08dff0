"""The two documents `modelfleet recommend` reads: a measured `profile.json` (written by `modelfleet
profile` beside a model version) and a declared profiles YAML (figures for hardware we cannot reach).

Both are versioned pydantic models with `extra="forbid"`; `docs/tune.md` describes them. Bump `PROFILE_SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PROFILE_SCHEMA_VERSION = 2
"""2 (2026-12-05): `slo.margin`, `measurements[].elapsed_s` and `confirmed`. A version-1 document
reads as version 2 with margin 1 (its capacities were counted at the SLO itself). Added since,
optional (a document without them reads as before): `measurements[].final` and `final_s`. Since
2026-12-05 a capacity is the knee within the bound (`capacity_step`), not its best step: no field
changed, older documents read by the same rule."""
PROFILE_FILENAME = "profile.json"
CHART_FILENAME = "profile.png"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Strict):
    """The scheduling settings of one configuration, as `--apply` writes them into config.yaml."""

    max_batch_size: Annotated[int, Field(ge=1)] = 1
    """dynamic_batching.max_batch_size; 1 turns dynamic batching off."""
    max_queue_delay_us: Annotated[int, Field(ge=0)] = 0
    """dynamic_batching.max_queue_delay_us."""
    instances: Annotated[int, Field(ge=1, le=64)] = 1
    """instances: executions of the model at the same time."""
    intra_op_threads: Annotated[int, Field(ge=0)] | None = None
    """onnxruntime.intra_op_threads; unset: the server's default."""
    shape_buckets: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    """shape_buckets.sizes (padding axis 1 of the inputs that vary there); () removes the model's
    buckets; unset: config.yaml's left as it is."""

    @property
    def name(self) -> str:
        """A short stable label, e.g. `b8-d2000-i1-t2` (batch, delay µs, instances, threads), then
        `-s32.64.128` for shape buckets (`-s0` for none)."""
        threads = "" if self.intra_op_threads is None else f"-t{self.intra_op_threads}"
        buckets = ""
        if self.shape_buckets is not None:
            buckets = "-s" + (".".join(str(b) for b in self.shape_buckets) or "0")
        return f"b{self.max_batch_size}-d{self.max_queue_delay_us}-i{self.instances}{threads}{buckets}"


# ---------------------------------------------------------------------------- measured (profile.json)


class Machine(_Strict):
    """Where a profile was measured; a profile from another machine is warned about."""

    nproc: Annotated[int, Field(ge=1)]
    """CPUs this process could use (os.sched_getaffinity)."""
    cpu_model: str | None
    memory_bytes: int | None
    platform: str
    python: str
    modelfleet: str
    onnxruntime: str | None

    @property
    def line(self) -> str:
        memory = f", {self.memory_bytes / 2**30:.0f} GiB" if self.memory_bytes else ""
        return f"{self.nproc} CPUs, {self.cpu_model or 'unknown CPU'}{memory}, {self.platform}"

    def same_hardware(self, other: Machine) -> bool:
        return (self.nproc, self.cpu_model) == (other.nproc, other.cpu_model)


Stopped = Literal["slo", "errors", "saturated", "max_concurrency", "interrupted", "failed"]
Percentile = Literal[50, 90, 99]
"""The latency percentiles a step records (`p50_ms`, `p90_ms`, `p99_ms`)."""


class Step(_Strict):
    """One step of a closed-loop concurrency ramp."""

    concurrency: Annotated[int, Field(ge=1)]
    requests: Annotated[int, Field(ge=0)]
    errors: Annotated[int, Field(ge=0)]
    throughput_per_s: Annotated[float, Field(ge=0)]
    """Successful inferences per second (one inference per request)."""
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    duration_s: float | None = None
    """Recorded seconds, where not the profile's `step_duration_s` (added within version 2): a
    ramp's low steps (`ramp.step_seconds`), confirmations, final steps."""

    @property
    def error_rate(self) -> float:
        total = self.requests + self.errors
        return self.errors / total if total else 1.0

    def latency_ms(self, percentile: Percentile = 90) -> float | None:
        return {50: self.p50_ms, 90: self.p90_ms, 99: self.p99_ms}[percentile]

    def within(self, bound_ms: float, max_error_rate: float, percentile: Percentile = 90) -> bool:
        """Answered, with the latency at `percentile` within `bound_ms` and errors within `max_error_rate`."""
        latency = self.latency_ms(percentile)
        return (
            self.requests > 0
            and latency is not None
            and latency <= bound_ms
            and self.error_rate <= max_error_rate
        )


FLAT_GAIN = 0.05
"""A step that adds under 5 % throughput over the best below it is flat (`ramp.SATURATION_GAIN`)."""


def capacity_step(
    steps: Sequence[Step],
    bound_ms: float,
    max_error_rate: float,
    final: Iterable[int] = (),
    percentile: Percentile = 90,
) -> Step | None:
    """The capacity step of a ramp: among its steps within the bound (the `final` concurrencies'
    only, where one of those is within it: a long window stands over short ones), the lowest
    concurrency from which the steps above add under FLAT_GAIN throughput: the knee, not the edge.
    None: no step is within the bound.

    Past the knee a closed loop only queues: the same throughput at up to twice the latency, and a
    step at the bound's edge is a saturated server whose throughput moves with whatever else the
    machine does (issue 13, fourth pass: the two benches off by over 10 % were both at c=16 with P90
    88 ms of a 90 ms bound). Where one step is the best by over FLAT_GAIN, it is that step."""
    within = [s for s in steps if s.within(bound_ms, max_error_rate, percentile)]
    finals = set(final)
    within = [s for s in within if s.concurrency in finals] or within
    top = max((s.throughput_per_s for s in within), default=None)
    if top is None:
        return None
    flat = [s for s in within if s.throughput_per_s * (1 + FLAT_GAIN) > top]
    return min(flat, key=lambda s: s.concurrency)


class Measurement(_Strict):
    """One configuration at one sequence length: its ramp and what it sustains within the SLO."""

    settings: Settings
    seq_len: Annotated[int, Field(ge=1)]
    """The requests' sequence length (with `seq_len_min`: the longest of the mix)."""
    seq_len_min: Annotated[int, Field(ge=1)] | None = None
    """Mixed lengths: the requests' lengths were spread from this to `seq_len` (`--seq-lens LO-HI`)."""
    steps: list[Step]
    load_s: float | None
    """Seconds from starting the server to the model answering (process start, load, warm-up,
    first inference): `cold_start_s` plus the server's own start."""
    cold_start_s: float | None = None
    """Seconds the first user of the model waits on a running server that has not loaded it: from
    the first request (metadata, which loads it) to the first inference's answer."""
    memory_bytes: int | None
    """PSS of the server process after the ramp (RSS where PSS cannot be read)."""
    stopped: Stopped
    """Why the ramp ended."""
    error: str | None = None
    """Why the configuration could not be measured (stopped: failed)."""
    elapsed_s: float | None = None
    """Wall seconds this configuration took, from starting its server to stopping it (none in
    version 1): where a profile's time goes."""
    confirmed: list[Annotated[int, Field(ge=1)]] = []
    """Concurrencies whose step was measured again (`--confirm-steps`); those steps' figures are
    the second window's."""
    final: list[Annotated[int, Field(ge=1)]] = []
    """Concurrencies measured once more after the search, `final_s` long, on a fresh server (the
    best configuration of its length, `profile --final-s`); those steps' figures are the final
    window's, and where one is within the bound, the capacity is taken from them alone."""
    final_s: Annotated[float, Field(gt=0)] | None = None
    """Recorded seconds of each final step (None: no final step)."""

    @property
    def config(self) -> str:
        return self.settings.name

    def capacity(self, bound_ms: float, max_error_rate: float, percentile: Percentile = 90) -> Step | None:
        """The step this configuration's capacity is read from (`capacity_step`; None: none is
        within the bound)."""
        return capacity_step(self.steps, bound_ms, max_error_rate, self.final, percentile)


def best_measurement(
    measurements: Iterable[Measurement],
    seq_len: int,
    bound_ms: float,
    max_error_rate: float,
    percentile: Percentile = 90,
) -> tuple[Measurement, Step] | None:
    """The configuration at `seq_len` with the highest capacity within the bound, and its capacity
    step: what `modelfleet recommend` picks on one instance type, and what the planner reads
    (None: no configuration has a step within the bound)."""
    best: tuple[Measurement, Step] | None = None
    for m in measurements:
        step = m.capacity(bound_ms, max_error_rate, percentile) if m.seq_len == seq_len else None
        if step is not None and (best is None or step.throughput_per_s > best[1].throughput_per_s):
            best = (m, step)
    return best


class Slo(_Strict):
    p90_ms: Annotated[float, Field(gt=0)]
    """The latency objective (P90) asked for."""
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    margin: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Capacity counts the steps whose P90 is within `margin x p90_ms` (`bound_ms`), and a ramp
    stops past it: a capacity step measured at the SLO's very edge is over it in a bench as often as
    not (issue 13). `profile --slo-margin` writes 0.9; 1 (a version-1 profile) is the SLO itself."""

    @property
    def bound_ms(self) -> float:
        """The P90 a capacity step must be within: margin x p90_ms."""
        return self.p90_ms * self.margin


class Profile(_Strict):
    """`profile.json`: what `modelfleet profile` measured for one model version on one machine."""

    schema_version: Literal[1, 2] = 2  # PROFILE_SCHEMA_VERSION
    model: str
    version: str
    model_digest: str
    """sha256 over the version folder's files (names and contents): another model, another digest."""
    created_at: str
    """ISO 8601, UTC."""
    machine: Machine
    instance_type: str | None = None
    """The catalogue instance type this machine stands for (`profile --instance-type`), if said."""
    slo: Slo
    search: Literal["brute", "quick"]
    step_duration_s: float
    elapsed_s: float
    interrupted: bool = False
    """Ctrl-C: what was measured before it is kept."""
    measurements: list[Measurement]


# ---------------------------------------------------------------------------- declared (YAML)


class DeclaredInstanceType(_Strict):
    """An instance type the planner's catalogue lacks (e.g. SageMaker's ml.*), with its price."""

    name: Annotated[str, Field(min_length=1)]
    usd_per_hour: Annotated[float, Field(gt=0)]
    note: str | None = None


class DeclaredRow(_Strict):
    """One configuration on one instance type, as measured elsewhere."""

    config: Annotated[str, Field(min_length=1)]
    instance_type: Annotated[str, Field(min_length=1)]
    invocations_per_minute: Annotated[float, Field(gt=0)] | None = None
    invocations_per_s: Annotated[float, Field(gt=0)] | None = None
    """Per instance: the most invocations sustained within the latency target; give one of the two."""
    batch_size: Annotated[int, Field(ge=1)] = 1
    """Inferences per invocation (the capacity in inferences is invocations x batch_size)."""
    latency_ms: Annotated[float, Field(gt=0)]
    """Latency at that rate (the source's P90, or its model latency: say which in `latency`)."""
    settings: Settings | None = None
    """What `--apply` would write; None: not a setting of this server (e.g. TensorRT)."""
    seq_len: Annotated[int, Field(ge=1)] | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _one_rate(self) -> DeclaredRow:
        if (self.invocations_per_minute is None) == (self.invocations_per_s is None):
            raise ValueError(
                f"row '{self.config}' on '{self.instance_type}': give one of invocations_per_minute "
                "and invocations_per_s"
            )
        return self

    @property
    def capacity_per_s(self) -> float:
        per_s = self.invocations_per_s
        if per_s is None:
            assert self.invocations_per_minute is not None
            per_s = self.invocations_per_minute / 60
        return per_s * self.batch_size


class DeclaredProfiles(_Strict):
    """A profiles YAML: capacity rows for hardware we cannot reach (see examples/seed-003)."""

    version: Literal[1] = 1
    model: Annotated[str, Field(min_length=1)]
    source: str | None = None
    """Where the figures come from."""
    latency: str = "p90"
    """What `latency_ms` is (e.g. `p90`, `model latency`, `mean at batch`)."""
    instance_types: list[DeclaredInstanceType] = []
    rows: Annotated[list[DeclaredRow], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> DeclaredProfiles:
        seen: set[tuple[str, str, int | None, int]] = set()
        for row in self.rows:
            key = (row.config, row.instance_type, row.seq_len, row.batch_size)
            if key in seen:
                raise ValueError(f"row '{row.config}' on '{row.instance_type}' is listed twice")
            seen.add(key)
        if not all(math.isfinite(r.capacity_per_s) for r in self.rows):
            raise ValueError("capacities must be finite")
        return self
