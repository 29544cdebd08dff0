"""Ramps and measurements written as (concurrency, throughput/s, P90 ms) points, for the tune tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from modelfleet.tune.schema import Measurement, Settings, Step

SILENT = Step(concurrency=2, requests=0, errors=0, throughput_per_s=0, p50_ms=None, p90_ms=None, p99_ms=None)
"""A step that answered nothing (its error rate is 1)."""


def benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).parents[3] / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steps(*points: tuple[int, float, float]) -> list[Step]:
    """One step per point: 100 requests, no errors, P50 half the P90, P99 twice it."""
    return [
        Step(concurrency=c, requests=100, errors=0, throughput_per_s=t, p50_ms=p / 2, p90_ms=p, p99_ms=p * 2)
        for c, t, p in points
    ]


def measurement(
    batch: int, seq_len: int, *points: tuple[int, float, float], final: list[int] | None = None
) -> Measurement:
    """A configuration (max batch size `batch`) ramped at `seq_len`; `final`: its final steps' concurrencies."""
    return Measurement(
        settings=Settings(max_batch_size=batch),
        seq_len=seq_len,
        steps=steps(*points),
        load_s=1,
        memory_bytes=1,
        stopped="slo",
        final=final or [],
        final_s=10.0 if final else None,
    )
