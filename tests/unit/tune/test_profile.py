"""The ramp's concurrency steps, and where the quick search starts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.tune.profile import ProfileSpec, lengths
from modelfleet.tune.ramp import concurrency_steps, start_concurrency
from modelfleet.tune.schema import Measurement, Settings, Slo, Step
from modelfleet.tune.sweep import default_space


def test_concurrency_doubles_up_to_the_top() -> None:
    assert concurrency_steps(64) == [1, 2, 4, 8, 16, 32, 64]
    assert concurrency_steps(12) == [1, 2, 4, 8, 12]
    assert concurrency_steps(1) == [1]


def test_quick_ramps_start_at_the_best_capacity_concurrency() -> None:
    def m(seq_len: int, *points: tuple[int, float, float]) -> Measurement:
        steps = [
            Step(concurrency=c, requests=10, errors=0, throughput_per_s=t, p50_ms=p, p90_ms=p, p99_ms=p)
            for c, t, p in points
        ]
        return Measurement(
            settings=Settings(), seq_len=seq_len, steps=steps, load_s=1, memory_bytes=1, stopped="slo"
        )

    slo = Slo(p90_ms=50)
    measured = [m(32, (1, 10, 5), (8, 80, 40), (16, 90, 60)), m(128, (1, 5, 30), (2, 6, 70))]
    assert start_concurrency(measured, 32, slo) == 8
    assert start_concurrency(measured, 128, slo) == 1  # its best is at concurrency 1
    assert start_concurrency([], 32, slo) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search": "optuna"}, "--search"),
        ({"seq_lens": ()}, "--seq-lens"),
        ({"mixed": ((16, 8),)}, "LO < HI"),
        ({"mixed": ((4, 8),)}, "must differ"),  # 8 is also a fixed length
        ({"mixed": ((4, 16), (2, 16))}, "must differ"),
        ({"step_s": 0}, "--step-s"),
        ({"warmup_s": -1}, "--warmup-s"),
        ({"max_concurrency": 0}, "--max-concurrency"),
    ],
)
def test_spec_checks(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "repository": Path("."),
        "seq_lens": (8,),
        "space": default_space(2),
        "slo": Slo(p90_ms=50),
    }
    with pytest.raises(ValueError, match=message):
        ProfileSpec(**{**fields, **change})  # type: ignore[arg-type]


def test_lengths_are_the_fixed_ones_then_the_mixes() -> None:
    spec = ProfileSpec(Path("."), (32,), default_space(2), Slo(p90_ms=50), mixed=((16, 128),))
    assert lengths(spec) == [(32, 32), (16, 128)]
    assert lengths(ProfileSpec(Path("."), (), default_space(2), Slo(p90_ms=50), mixed=((1, 2),))) == [(1, 2)]
