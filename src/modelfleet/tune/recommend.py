"""Capacity rows x prices → ranked recommendations: for a target rate, each configuration on each
instance type needs ceil(rate / capacity) instances; the cheapest that meets the latency bound wins.

Pure arithmetic: no files, no catalogue lookups (`sources` builds the options).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.schema import Settings

SECONDS_PER_HOUR = 3600
COST_DIGITS = 6  # $/h to a millionth of a dollar: 10 x 0.7364 is 7.364, not 7.364000000000001


@dataclass(frozen=True, slots=True)
class CurvePoint:
    throughput_per_s: float
    p90_ms: float


Basis = Literal["final", "confirmed", "window", "declared"]
"""What a capacity figure stands on: a measured profile's final step (`profile --final-s`, 10 s on a
fresh server), a confirmed step (a second window), one short window (`--step-s`, 2 s: neither), or a
declared row."""


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration on one instance type, with what one instance sustains within the SLO."""

    config: str
    instance_type: str
    capacity_per_s: float
    """Inferences per second one instance sustains within the SLO."""
    latency_ms: float
    """Latency at that rate (P90 when measured here)."""
    usd_per_hour: float
    """Price of one instance."""
    settings: Settings | None = None
    seq_len: int | None = None
    batch_size: int = 1
    curve: tuple[CurvePoint, ...] = ()
    """Measured ramp (throughput ascending), to predict the P90 at a load below capacity."""
    concurrency: int | None = None
    """The closed-loop concurrency of the measured capacity step: what to verify it at (bench -c)."""
    source: str = ""
    model: str = ""
    """The model the row measures (precision variants from `modelfleet compile` are models of their own)."""
    basis: Basis = "declared"
    """What the capacity stands on (`Basis`)."""

    def predicted_p90_ms(self, load_per_s: float) -> float:
        """P90 at `load_per_s` per instance: the first measured step that carries it, else the
        latency at capacity (declared rows know only that)."""
        for point in self.curve:
            if point.throughput_per_s >= load_per_s:
                return point.p90_ms
        return self.latency_ms


@dataclass(frozen=True, slots=True)
class Recommendation:
    config: str
    instance_type: str
    instance_count: int
    cost_per_hour: float
    cost_per_million: float
    """At the target rate: $/h / inferences per hour x 10^6."""
    cost_per_million_at_capacity: float
    """With every instance at capacity (seed 004's "cost per inference", x 10^6)."""
    capacity_per_s: float
    predicted_p90_ms: float
    latency_at_capacity_ms: float
    usd_per_hour_per_instance: float
    settings: Settings | None
    seq_len: int | None
    batch_size: int
    source: str
    model: str
    concurrency: int | None = None
    """The capacity step's concurrency (measured profiles only)."""
    basis: Basis = "declared"

    def document(self) -> dict[str, object]:
        return {
            "config": self.config,
            "model": self.model,
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "cost_per_hour": self.cost_per_hour,
            "cost_per_million": round(self.cost_per_million, 4),
            "cost_per_million_at_capacity": round(self.cost_per_million_at_capacity, 4),
            "cost_per_inference_at_capacity": round(self.cost_per_million_at_capacity / 1e6, 10),
            "capacity_per_s": round(self.capacity_per_s, 3),
            "predicted_p90_ms": round(self.predicted_p90_ms, 3),
            "latency_at_capacity_ms": round(self.latency_at_capacity_ms, 3),
            "concurrency": self.concurrency,
            "capacity_basis": self.basis,
            "usd_per_hour_per_instance": self.usd_per_hour_per_instance,
            "settings": None if self.settings is None else self.settings.model_dump(),
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    recommendations: list[Recommendation]
    """Cheapest first, those within the latency bound only."""
    over_latency: list[Recommendation]
    """Priced but over the latency bound, lowest latency first."""


class NoConfigurationMeets(TuneInputError):
    """Every option is over the latency bound; `best` is the lowest-latency one."""

    def __init__(self, message: str, best: Recommendation) -> None:
        super().__init__(message)
        self.best = best


def price(option: Option, rate_per_s: float) -> Recommendation:
    count = max(1, math.ceil(rate_per_s / option.capacity_per_s - 1e-9))
    cost = round(count * option.usd_per_hour, COST_DIGITS)
    return Recommendation(
        config=option.config,
        instance_type=option.instance_type,
        instance_count=count,
        cost_per_hour=cost,
        cost_per_million=cost / (rate_per_s * SECONDS_PER_HOUR) * 1e6,
        cost_per_million_at_capacity=option.usd_per_hour / (option.capacity_per_s * SECONDS_PER_HOUR) * 1e6,
        capacity_per_s=option.capacity_per_s,
        predicted_p90_ms=option.predicted_p90_ms(rate_per_s / count),
        latency_at_capacity_ms=option.latency_ms,
        usd_per_hour_per_instance=option.usd_per_hour,
        settings=option.settings,
        seq_len=option.seq_len,
        batch_size=option.batch_size,
        source=option.source,
        model=option.model,
        concurrency=option.concurrency,
        basis=option.basis,
    )


def rank(options: list[Option], rate_per_s: float, max_latency_ms: float | None = None) -> Ranking:
    """Every option priced for `rate_per_s`; NoConfigurationMeets when none is within the bound."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise TuneInputError(f"--rate must be a positive number of inferences per second, got {rate_per_s}")
    if not options:
        raise TuneInputError("no configuration to rank: the profiles hold no usable row")
    priced = [price(o, rate_per_s) for o in options if o.capacity_per_s > 0]
    if not priced:
        raise TuneInputError("no configuration sustains any load within the SLO")

    def within(r: Recommendation) -> bool:
        return max_latency_ms is None or r.predicted_p90_ms <= max_latency_ms

    kept = sorted(
        (r for r in priced if within(r)),
        key=lambda r: (r.cost_per_hour, r.predicted_p90_ms, r.config, r.instance_type),
    )
    over = sorted(
        (r for r in priced if not within(r)), key=lambda r: (r.predicted_p90_ms, r.cost_per_hour, r.config)
    )
    if not kept:
        best = over[0]
        raise NoConfigurationMeets(
            f"no configuration keeps the latency within {max_latency_ms:g} ms at {rate_per_s:g}/s; "
            f"the best reachable is {best.config} on {best.instance_type} at "
            f"{best.predicted_p90_ms:g} ms ({best.instance_count} instances, ${best.cost_per_hour:g}/h)",
            best,
        )
    return Ranking(kept, over)
