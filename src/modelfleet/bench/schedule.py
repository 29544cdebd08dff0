"""When open-loop requests leave: scheduled send times from rate phases, and the loop that fires them.

Times are integer nanoseconds on the client's clock (`perf_counter_ns`). `pace` takes the clock
and the sleep as arguments, so its timing is tested with a fake clock rather than real time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from time import perf_counter_ns

import numpy as np

from modelfleet.bench.spec import Arrivals, Phase

POISSON_BLOCK = 4096  # exponential gaps drawn per numpy call
YIELD_EVERY = 64  # when behind, let the loop read answers after this many sends in a row


def phase_bounds_ns(phases: Iterable[Phase], start_ns: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each phase on the clock; rounding does not accumulate over many phases."""
    bounds, elapsed_s = [], 0.0
    for phase in phases:
        begin = start_ns + round(elapsed_s * 1e9)
        elapsed_s += phase.duration_s
        bounds.append((begin, start_ns + round(elapsed_s * 1e9)))
    return bounds


def arrival_times(
    phases: Iterable[Phase],
    arrivals: Arrivals,
    start_ns: int = 0,
    seed: int = 0,
    share: int = 0,
    shares: int = 1,
) -> Iterator[int]:
    """Scheduled send times of one client process's share of the load, in order.

    Constant: arrival k of a phase is at its start + k/R; share i of n takes k = i, i+n, ..., so
    the processes together keep the even spacing. Poisson: each share is an independent Poisson
    stream of rate R/n (their superposition is Poisson at R), reproducible from (seed, share).
    Each phase starts afresh at its boundary: no arrival carries over from the previous rate.
    """
    phases = list(phases)
    rng = np.random.default_rng([seed, share])
    for phase, (begin, end) in zip(phases, phase_bounds_ns(phases, start_ns), strict=True):
        if arrivals is Arrivals.CONSTANT:
            gap_ns = 1e9 / phase.rate_per_s
            k = share
            while (at := begin + int(k * gap_ns)) < end:
                yield at
                k += shares
        else:
            yield from _poisson(rng, begin, end, 1e9 * shares / phase.rate_per_s)


def _poisson(rng: np.random.Generator, begin: int, end: int, mean_gap_ns: float) -> Iterator[int]:
    last = float(begin)
    while True:
        times = last + np.cumsum(rng.exponential(mean_gap_ns, POISSON_BLOCK))
        inside = times[times < end]
        yield from inside.astype(np.int64).tolist()
        if len(inside) < len(times):
            return
        last = float(times[-1])


async def pace(
    times: Iterable[int],
    fire: Callable[[int], None],
    clock: Callable[[], int] = perf_counter_ns,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Call `fire(t)` for each scheduled time t once the clock has reached it, never before.

    The event loop's timers have millisecond resolution: a shorter sleep returns at once, and
    spinning on those until a send is due costs far more CPU than the sends. So each wait is
    rounded up to whole milliseconds, and requests leave up to about 1 ms late; their latency
    counts from the scheduled time, so the lateness is charged, not hidden (it is also reported
    as send lag). Times that fell due while the loop was busy go out together, each with its own
    scheduled time, with a pause for the loop's other work every `YIELD_EVERY` sends.
    """
    in_a_row = 0
    for at in times:
        now = clock()
        if at > now:
            in_a_row = 0
            while at > now:
                await sleep(math.ceil((at - now) / 1e6) / 1e3)
                now = clock()
        elif in_a_row >= YIELD_EVERY:
            in_a_row = 0
            await sleep(0)
        in_a_row += 1
        fire(at)
