"""The rules of a concurrency ramp, over the steps measured so far: when it stops, and which step
is measured again, longer, before the ramp is recorded (profile.py runs the steps). "The SLO"
below is its capacity bound, `Slo.bound_ms` (margin x P90 objective).

A step lasts seconds, and on a shared machine one configuration can measure 10-20 % apart in two
short windows (docs/benchmarks.md, issue 13). Two rules keep one lucky or unlucky window from
deciding: a plateau stops the ramp only once the latency has climbed, and the step a capacity
would be taken from is re-measured before it stands for the configuration.
"""

from __future__ import annotations

from modelfleet.tune.schema import FLAT_GAIN, Measurement, Slo, Step, Stopped, best_measurement, capacity_step

SATURATION_GAIN = FLAT_GAIN
"""A step that adds under 5 % throughput over the best before it is flat (what the capacity's
knee is taken at: `schema.capacity_step`)."""
SATURATION_P90_SHARE = 0.5
"""Flat steps stop the ramp only once the P90 has reached half the SLO: a server that is truly
saturated doubles its latency with each doubling of concurrency and reaches the SLO within a step
or two anyway, while a plateau at low latency may be a slow window (201/s at concurrency 1, 2 and
4 in one run; 308/s at 16 in the next)."""
CONFIRMATIONS = 2
"""At most this many steps of one ramp are re-measured."""
CONTENDER_SHARE = 0.9
"""A configuration is confirmed when its capacity is within 10 % of the best one so far at its
sequence length (or there is none yet): the others cannot be chosen, re-measuring them is waste."""
QUICK_CONTENDER_SHARE = 1.0
"""The quick search confirms only a configuration that would be the new best: it decides on
first windows anyway (a move, a runner-up), and a confirmation was a fifth of its steps (18 of 68
in a profile of 2026-12-05, 13:04 UTC); what is confirmed is still every figure it may choose."""


WARM_ROUND_TRIPS = 8.0
"""A ramp step on a server that has just run the step before it warms up for this many of the
previous step's P90s: the next step doubles the concurrency, so about four of its own round trips,
enough for a closed loop to reach its steady queue (every user sends at once when it starts)."""
MIN_WARMUP_S = 0.2
"""The least warm-up of such a step. The first step on a fresh server keeps the full warm-up
(`--warmup-s`), and no step's is longer. A brute-force profile of minilm-sentiment runs ~190 steps:
0.5 s each was 95 s of its 10 minutes (issue 13: 618 s on 2026-12-06, a faster core ramping further)."""


def warmup_after(previous: Step | None, warmup_s: float) -> float:
    """Seconds of unrecorded load before a ramp step: the full `warmup_s` after none (a fresh
    server) or after a step that answered nothing, else WARM_ROUND_TRIPS of the previous step's
    P90, at least MIN_WARMUP_S, never more than `warmup_s`."""
    if previous is None or previous.p90_ms is None:
        return warmup_s
    return min(warmup_s, max(MIN_WARMUP_S, WARM_ROUND_TRIPS * previous.p90_ms / 1000))


SHORT_STEP_SHARE = 0.5
"""A step that cannot be near the capacity bound is measured for this share of `--step-s`..."""
SHORT_STEP_P90_SHARE = 1 / 8
"""...that is, the first step of a ramp from concurrency 1, or a step after one whose P90 was under
this share of the bound: a closed loop at twice the concurrency at most doubles its P90 unless its
throughput falls, so such a step stays under a quarter of the bound, far from where a capacity is
read at its knee (and where one is a contender's capacity step, it is confirmed full length).
A brute-force profile of minilm-sentiment ran 68 such steps of its 191-194 (issue 13, 2026-12-06:
596-619 s against the 10 minutes; 499-555 s in five runs with them); the quick search, which starts
its ramps at the best capacity's concurrency, 4."""


def step_seconds(previous: Step | None, concurrency: int, step_s: float, slo: Slo) -> float:
    """Recorded seconds of a ramp step at `concurrency` after `previous` on the same server (None:
    a fresh server): SHORT_STEP_SHARE of `step_s` for a low step (see SHORT_STEP_P90_SHARE), else
    `step_s`."""
    if previous is None:
        low = concurrency == 1
    else:
        low = previous.p90_ms is not None and previous.p90_ms < slo.bound_ms * SHORT_STEP_P90_SHARE
    return step_s * SHORT_STEP_SHARE if low else step_s


def concurrency_steps(top: int) -> list[int]:
    """1, 2, 4, … doubling up to `top`, which is the last step."""
    steps, c = [], 1
    while c < top:
        steps.append(c)
        c *= 2
    return [*steps, top]


def stop_reason(steps: list[Step], slo: Slo) -> Stopped | None:
    """Why the ramp stops after its last step; None: climb on."""
    last = steps[-1]
    if last.error_rate > slo.max_error_rate:
        return "errors"
    if last.p90_ms is None or last.p90_ms > slo.bound_ms:
        return "slo"
    if len(steps) >= 3 and last.p90_ms >= slo.bound_ms * SATURATION_P90_SHARE:
        flat = all(
            steps[i].throughput_per_s < max(s.throughput_per_s for s in steps[:i]) * (1 + SATURATION_GAIN)
            for i in (len(steps) - 2, len(steps) - 1)
        )
        if flat:
            return "saturated"
    return None


def step_back(steps: list[Step], stopped: Stopped | None, top: int) -> int | None:
    """The concurrency to measure below a ramp that started above 1 (the quick search's) and whose
    first step is already over the SLO: the best configuration's capacity concurrency may sit just
    under the SLO for it and just over for this one (issue 13, sequence 128: capacity at c=4 with
    P90 93 ms), which would score it 0 unmeasured where it carries load."""
    if stopped != "slo" or len(steps) != 1 or steps[0].concurrency == 1:
        return None
    return max(c for c in concurrency_steps(top) if c < steps[0].concurrency)


def capacity_index(steps: list[Step], slo: Slo) -> int | None:
    """Where the capacity step of a ramp is (`schema.capacity_step`: the knee within the bound)."""
    step = capacity_step(steps, slo.bound_ms, slo.max_error_rate)
    return None if step is None else next(i for i, s in enumerate(steps) if s is step)


def to_confirm(steps: list[Step], slo: Slo, confirmed: set[int], floor: float) -> int | None:
    """The step to measure again: the capacity step, unless it was re-measured already, carries
    under `floor` per second, or the ramp has had its CONFIRMATIONS. When a re-measured step
    falls (or leaves the SLO), the next best becomes the capacity step and is confirmed in turn."""
    best = capacity_index(steps, slo)
    if best is None or best in confirmed or len(confirmed) >= CONFIRMATIONS:
        return None
    return best if steps[best].throughput_per_s >= floor else None


def contender_floor(
    measured: list[Measurement], seq_len: int, slo: Slo, share: float = CONTENDER_SHARE
) -> float:
    """The throughput a new configuration's capacity must reach to be confirmed: `share` of the
    best so far at `seq_len` (CONTENDER_SHARE, QUICK_CONTENDER_SHARE)."""
    top = best_capacity(measured, seq_len, slo)
    return 0.0 if top is None else top.throughput_per_s * share


def start_concurrency(measured: list[Measurement], seq_len: int, slo: Slo) -> int:
    """Where the quick search's ramps start, skipping the low steps: at the concurrency where the
    best configuration so far at `seq_len` had its capacity (brute force measures every step: the
    whole curve). A configuration whose capacity lies lower is below the best anyway; starting at
    half measured a third more steps in replays of the issue-13 runs and found no better one."""
    top = best_capacity(measured, seq_len, slo)
    return 1 if top is None else top.concurrency


def best_at(measured: list[Measurement], seq_len: int, slo: Slo) -> Measurement | None:
    """The configuration at `seq_len` with the highest capacity within the bound (what recommend
    picks, `schema.best_measurement`; None: none has a step within it)."""
    best = best_measurement(measured, seq_len, slo.bound_ms, slo.max_error_rate)
    return None if best is None else best[0]


def best_capacity(measured: list[Measurement], seq_len: int, slo: Slo) -> Step | None:
    """The capacity step of the best configuration measured so far at `seq_len` (None: none yet)."""
    best = best_measurement(measured, seq_len, slo.bound_ms, slo.max_error_rate)
    return None if best is None else best[1]


FINAL_STEPS = 2
"""A configuration's final step, and at most one step below it when that came back over the bound."""
FINAL_CONFIGS = 2
"""At most this many configurations of one length get final steps: the best, and the one that is
best after its final step fell below another's short window (each costs a server start and 12 s)."""
QUICK_FINAL_CONFIGS = 1
"""The quick search's: the best only. Its final steps were a quarter of its time (55 s and 85 s of
224 s and 273 s, issue 13, fifth pass), brute force's a sixth. When that one's final figure falls
below another configuration's window, the other is chosen on that window (`recommend` says so:
`capacity_basis`)."""
FINAL_WARMUP_S = 2.0
"""Unrecorded seconds before a final step: it runs on a freshly started server (a 20 s bench warms
up as long)."""


def final_concurrency(steps: list[Step], slo: Slo, final: list[int], top: int) -> int | None:
    """The concurrency to measure next with a final (long) step: first the capacity step's; when
    that came back over the bound, one concurrency below it, as step_back steps down; None when a
    final step is within the bound, FINAL_STEPS were measured, or there is nothing below."""
    if not final:
        best = capacity_step(steps, slo.bound_ms, slo.max_error_rate)
        return None if best is None else best.concurrency
    done = [s for s in steps if s.concurrency in final]
    if len(final) >= FINAL_STEPS or any(s.within(slo.bound_ms, slo.max_error_rate) for s in done):
        return None
    lower = [c for c in concurrency_steps(top) if c < min(final)]
    return max(lower, default=None)


def with_step(steps: list[Step], step: Step) -> list[Step]:
    """`steps` with `step` in place of the one at its concurrency, or inserted in concurrency order."""
    kept = [s for s in steps if s.concurrency != step.concurrency]
    return sorted([*kept, step], key=lambda s: s.concurrency)


def to_finish(
    measured: list[Measurement], seq_len: int, slo: Slo, finished: int, configs: int = FINAL_CONFIGS
) -> Measurement | None:
    """The configuration at `seq_len` to give final steps: the best one (what recommend picks),
    unless it has them already or `configs` configurations had them."""
    best = best_at(measured, seq_len, slo) if finished < configs else None
    return None if best is None or best.final_s is not None else best
