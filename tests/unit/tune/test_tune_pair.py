"""The tune pair's referee readings (benchmarks/tune_pair.py): the throughput at the bound read
between steps, on the referee's own figures of 2026-12-06."""

from __future__ import annotations

from modelfleet.tune.schema import Step, capacity_step
from tests.unit.tune.ramps import SILENT, benchmark, steps

tune_pair = benchmark("tune_pair")


def test_a_step_just_over_the_bound_counts_in_proportion() -> None:
    """Pair 1, sequence 32: b16-d1000-i2-t1's P90 stays near 80 ms from c=8 to 16 and its top step,
    397/s, lands at 92.3 ms: the knee reading drops it (206.5/s), the reading between steps puts the
    bound of 90 ms 81 % of the way from c=16 to c=32."""
    cliff = steps((8, 206.5, 41.8), (16, 208.0, 80.47), (32, 397.17, 92.34))
    knee = capacity_step(cliff, 90.0, 0.01)
    assert knee is not None and knee.throughput_per_s == 206.5
    assert tune_pair.at_bound(cliff, 90.0, 0.01) == round(208.0 + (90 - 80.47) / (92.34 - 80.47) * 189.17, 2)


def test_the_best_step_within_stands_when_the_step_above_carries_less() -> None:
    falling = steps((8, 319.5, 25.7), (16, 352.5, 54.24), (32, 305.67, 133.25))
    assert tune_pair.at_bound(falling, 90.0, 0.01) == 352.5
    top = steps((2, 79.34, 26.27), (4, 88.34, 48.69), (8, 93.5, 88.75))  # nothing measured above
    assert tune_pair.at_bound(top, 90.0, 0.01) == 93.5


def test_nothing_within_the_bound_or_a_silent_step() -> None:
    assert tune_pair.at_bound(steps((4, 50.0, 120.0), (8, 60.0, 200.0)), 90.0, 0.01) is None
    silent = [*steps((4, 80.0, 40.0)), SILENT.model_copy(update={"concurrency": 8})]
    assert tune_pair.at_bound(silent, 90.0, 0.01) == 80.0
    failing = [
        *steps((4, 80.0, 40.0)),
        Step(
            concurrency=8, requests=900, errors=100, throughput_per_s=120, p50_ms=None, p90_ms=95, p99_ms=None
        ),
    ]
    assert tune_pair.at_bound(failing, 90.0, 0.01) == 80.0  # the step above fails: no line to it
