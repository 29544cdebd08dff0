"""Open-loop arrival times and the pacing loop, timed with a fake clock (no real time passes)."""

import itertools

import numpy as np
import pytest

from modelfleet.bench.schedule import YIELD_EVERY, arrival_times, pace, phase_bounds_ns
from modelfleet.bench.spec import Arrivals, Phase

MS = 1_000_000
S = 1_000_000_000


def test_constant_spacing_per_phase() -> None:
    phases = [Phase(1.0, 4), Phase(0.5, 10)]
    times = list(arrival_times(phases, Arrivals.CONSTANT, start_ns=7))
    assert times == [7 + t * MS for t in (0, 250, 500, 750, 1000, 1100, 1200, 1300, 1400)]


def test_constant_shares_interleave_into_the_full_schedule() -> None:
    phases = [Phase(1.0, 6), Phase(1.0, 3)]
    whole = list(arrival_times(phases, Arrivals.CONSTANT))
    parts = [list(arrival_times(phases, Arrivals.CONSTANT, share=i, shares=2)) for i in range(2)]
    assert sorted(parts[0] + parts[1]) == whole
    assert parts[0][:3] == [0, 333_333_333, 666_666_666]


def test_phase_bounds_do_not_drift() -> None:
    bounds = phase_bounds_ns([Phase(0.1, 1)] * 30, start_ns=5)
    assert bounds[0] == (5, 5 + 100 * MS)
    assert bounds[-1][1] == 5 + 3 * S
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_poisson_is_reproducible_with_a_seed() -> None:
    phases = [Phase(2.0, 50)]
    first = list(arrival_times(phases, Arrivals.POISSON, seed=3))
    assert first == list(arrival_times(phases, Arrivals.POISSON, seed=3))
    assert first != list(arrival_times(phases, Arrivals.POISSON, seed=4))
    assert first != list(arrival_times(phases, Arrivals.POISSON, seed=3, share=1, shares=2))


def test_poisson_rate_and_gaps() -> None:
    times = np.array(list(arrival_times([Phase(100.0, 200), Phase(100.0, 50)], Arrivals.POISSON, seed=1)))
    first, second = times[times < 100 * S], times[times >= 100 * S]
    assert len(first) == pytest.approx(20_000, abs=4 * np.sqrt(20_000))  # 4 sigma
    assert len(second) == pytest.approx(5_000, abs=4 * np.sqrt(5_000))
    assert np.all(np.diff(times) >= 0) and times[-1] < 200 * S
    gaps = np.diff(first)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1


def test_poisson_shares_add_up_to_the_rate() -> None:
    phases = [Phase(50.0, 400)]
    total = sum(
        len(list(arrival_times(phases, Arrivals.POISSON, seed=0, share=i, shares=4))) for i in range(4)
    )
    assert total == pytest.approx(20_000, abs=4 * np.sqrt(20_000))


class FakeClock:
    """A clock that moves only when the pacer sleeps: by the asked time plus `late_ns`."""

    def __init__(self, late_ns: int = 0, early_ns: int = 0) -> None:
        self.now = 0
        self.late_ns, self.early_ns = late_ns, early_ns
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0, round(seconds * 1e9) + self.late_ns - self.early_ns)


async def run_pace(times: list[int], clock: FakeClock) -> list[tuple[int, int]]:
    fired: list[tuple[int, int]] = []
    await pace(times, lambda at: fired.append((at, clock.now)), clock, clock.sleep)
    return fired


async def test_pace_fires_each_time_once_due_with_its_own_time() -> None:
    clock = FakeClock(late_ns=100_000)
    times = list(arrival_times([Phase(0.05, 400)], Arrivals.CONSTANT))  # every 2.5 ms
    fired = await run_pace(times, clock)
    assert [at for at, _ in fired] == times
    lags = [now - at for at, now in fired]
    assert min(lags) >= 0 and max(lags) < 1 * MS + 100_000  # never early, at most ~1 ms late
    assert all(s == round(s, 3) and s > 0 for s in clock.sleeps)  # whole milliseconds


async def test_pace_never_fires_early_when_the_sleep_wakes_early() -> None:
    clock = FakeClock(early_ns=700_000)
    times = [10 * MS, 20 * MS]
    fired = await run_pace(times, clock)
    assert [at for at, _ in fired] == times
    assert all(now >= at for at, now in fired)
    assert len(clock.sleeps) > 2  # it slept again after each early wake


async def test_pace_sends_what_fell_due_together_and_still_yields() -> None:
    clock = FakeClock()
    clock.now = 1 * S  # the whole schedule is already due
    times = [i * MS for i in range(10 * YIELD_EVERY)]
    fired = await run_pace(times, clock)
    assert [at for at, _ in fired] == times
    assert clock.sleeps.count(0) == 9  # the loop got a turn every YIELD_EVERY sends
