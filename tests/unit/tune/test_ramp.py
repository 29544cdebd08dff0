"""A ramp's rules on noisy step sequences: when it stops, which step is measured again."""

from __future__ import annotations

from modelfleet.tune.ramp import (
    FINAL_CONFIGS,
    QUICK_CONTENDER_SHARE,
    QUICK_FINAL_CONFIGS,
    capacity_index,
    contender_floor,
    final_concurrency,
    step_back,
    step_seconds,
    stop_reason,
    to_confirm,
    to_finish,
    warmup_after,
    with_step,
)
from modelfleet.tune.schema import Measurement, Settings, Slo, Step
from tests.unit.tune.ramps import SILENT, measurement, steps

SLO = Slo(p90_ms=100)
SLO_90 = Slo(p90_ms=100, margin=0.9)


def test_over_the_slo_or_the_error_rate_stops() -> None:
    assert stop_reason(steps((1, 100, 50), (2, 150, 101)), SLO) == "slo"
    failing = Step(concurrency=2, requests=90, errors=10, throughput_per_s=90, p50_ms=5, p90_ms=9, p99_ms=9)
    assert stop_reason([*steps((1, 100, 5)), failing], SLO) == "errors"
    assert stop_reason([SILENT], SLO) == "errors"  # nothing answered: an error rate of 1
    assert stop_reason(steps((1, 100, 5), (2, 180, 9)), SLO) is None


def test_a_plateau_at_low_latency_climbs_on() -> None:
    """Issue 13, pair 1: 201/s at concurrency 1, 2 and 4 (P90 6-23 ms) in one run, 308/s at 16 in
    the next: three flat steps far below the SLO are not taken for saturation."""
    plateau = steps((1, 201, 6), (2, 201, 12), (4, 200, 23))
    assert stop_reason(plateau, SLO) is None
    assert stop_reason([*plateau, *steps((8, 282, 31))], SLO) is None
    saturated = [*plateau, *steps((8, 203, 52))]
    assert stop_reason(saturated, SLO) == "saturated"  # flat again, and the latency has climbed


def test_one_flat_step_is_not_saturation() -> None:
    assert stop_reason(steps((1, 100, 30), (2, 180, 40), (4, 182, 60)), SLO) is None
    assert stop_reason(steps((1, 100, 30), (2, 180, 40), (4, 182, 60), (8, 260, 70)), SLO) is None
    assert stop_reason(steps((1, 100, 30), (2, 180, 40), (4, 182, 60), (8, 183, 90)), SLO) == "saturated"


def test_the_capacity_step_is_confirmed_then_the_next_if_it_falls() -> None:
    """Issue 13, round 1.3: 221/s at c=1, 247 at c=2 (P90 9 ms), 196 at c=4, 132 at c=8 over the
    SLO; a 20 s bench at c=2 gave 95/s."""
    ramp = steps((1, 221, 5), (2, 247, 9), (4, 196, 30), (8, 132, 116))
    assert capacity_index(ramp, SLO) == 1
    assert to_confirm(ramp, SLO, set(), floor=0) == 1
    ramp[1] = steps((2, 120, 18))[0]  # measured again, longer: it did not hold
    assert capacity_index(ramp, SLO) == 0
    assert to_confirm(ramp, SLO, {1}, floor=0) == 0  # the best now is c=1, not yet confirmed
    ramp[0] = steps((1, 110, 10))[0]
    assert to_confirm(ramp, SLO, {0, 1}, floor=0) is None  # two confirmations at most
    ramp = steps((1, 100, 5), (2, 150, 60))
    assert to_confirm(ramp, SLO, {1}, floor=0) is None  # confirmed and still the best


def test_a_confirmation_over_the_slo_leaves_the_capacity() -> None:
    ramp = steps((4, 200, 60), (8, 230, 95))
    ramp[1] = steps((8, 210, 104))[0]
    assert capacity_index(ramp, SLO) == 0 and to_confirm(ramp, SLO, {1}, floor=0) == 0


def test_only_contenders_are_confirmed() -> None:
    def measured(seq_len: int, throughput: float) -> Measurement:
        return Measurement(
            settings=Settings(),
            seq_len=seq_len,
            steps=steps((4, throughput, 50)),
            load_s=1,
            memory_bytes=1,
            stopped="slo",
        )

    done = [measured(32, 300), measured(32, 200), measured(128, 70)]
    assert contender_floor(done, 32, SLO) == 270
    assert contender_floor(done, 128, SLO) == 63
    assert contender_floor(done, 64, SLO) == 0  # the first at its length is always confirmed
    assert contender_floor(done, 32, SLO, QUICK_CONTENDER_SHARE) == 300  # quick: a new best only
    ramp = steps((1, 100, 10), (2, 260, 30))
    assert to_confirm(ramp, SLO, set(), floor=270) is None
    assert to_confirm(ramp, SLO, set(), floor=250) == 1
    assert to_confirm(steps((1, 50, 120)), SLO, set(), floor=0) is None  # nothing within the SLO


def test_a_ramp_started_high_steps_back_once_when_its_first_step_is_over_the_slo() -> None:
    first = steps((4, 54, 122))
    assert step_back(first, stop_reason(first, SLO), 64) == 2
    assert step_back(steps((16, 154, 131)), "slo", 64) == 8
    assert step_back(steps((1, 30, 130)), "slo", 64) is None  # nothing below concurrency 1
    assert step_back(steps((4, 54, 80), (8, 60, 130)), "slo", 64) is None  # it had a step within
    assert step_back(steps((4, 54, 80)), None, 64) is None


def test_a_margin_moves_the_capacity_and_the_stop_below_the_slo() -> None:
    tight = Slo(p90_ms=100, margin=0.9)
    assert tight.bound_ms == 90
    ramp = steps((4, 200, 60), (8, 230, 95))
    assert capacity_index(ramp, SLO) == 1 and capacity_index(ramp, tight) == 0
    assert stop_reason(ramp, SLO) is None and stop_reason(ramp, tight) == "slo"


def test_the_final_step_is_the_capacity_steps_then_one_below_when_over() -> None:
    ramp = steps((1, 100, 20), (2, 180, 40), (4, 232, 70), (8, 240, 95))
    assert final_concurrency(ramp, SLO_90, [], 64) == 4  # c=8 is over 0.9 x 100 ms
    within = with_step(ramp, steps((4, 210, 80))[0])
    assert final_concurrency(within, SLO_90, [4], 64) is None  # within the bound: done, even if lower
    over = with_step(ramp, steps((4, 236, 93))[0])
    assert [s.concurrency for s in over] == [1, 2, 4, 8] and over[2].throughput_per_s == 236
    assert final_concurrency(over, SLO_90, [4], 64) == 2  # one concurrency down, as step_back does
    assert (
        final_concurrency(with_step(over, steps((2, 170, 95))[0]), SLO_90, [2, 4], 64) is None
    )  # two at most
    assert final_concurrency(steps((1, 100, 95)), SLO_90, [], 64) is None  # no capacity step
    assert final_concurrency(steps((1, 100, 95)), SLO_90, [1], 64) is None  # nothing below 1


def test_with_step_inserts_a_concurrency_the_ramp_skipped() -> None:
    quick = steps((8, 250, 40), (16, 270, 85))  # a quick ramp started at 8
    assert [s.concurrency for s in with_step(quick, steps((4, 200, 20))[0])] == [4, 8, 16]


def test_a_final_step_within_the_bound_is_the_capacity_even_below_a_short_window() -> None:
    m = measurement(16, 32, (8, 250, 40), (16, 265, 80))
    finished = m.model_copy(
        update={"steps": with_step(m.steps, steps((16, 230, 85))[0]), "final": [16], "final_s": 10.0}
    )
    best = finished.capacity(SLO_90.bound_ms, SLO_90.max_error_rate)
    assert best is not None and (best.concurrency, best.throughput_per_s) == (16, 230)
    over = m.model_copy(
        update={"steps": with_step(m.steps, steps((16, 260, 95))[0]), "final": [16], "final_s": 10.0}
    )
    best = over.capacity(SLO_90.bound_ms, SLO_90.max_error_rate)
    assert best is not None and best.concurrency == 8  # no final step within: the ramp's best


def test_to_finish_takes_the_best_then_the_one_that_overtook_it() -> None:
    a = measurement(1, 32, (8, 265, 60))
    b = measurement(2, 32, (8, 250, 60))
    other_length = measurement(3, 128, (4, 300, 60))
    measured = [a, b, other_length]
    assert to_finish(measured, 32, SLO_90, 0) is a
    a_final = a.model_copy(update={"steps": steps((8, 240, 70)), "final": [8], "final_s": 10.0})
    assert to_finish([a_final, b, other_length], 32, SLO_90, 1) is b  # b's short window is now best
    b_final = b.model_copy(update={"steps": steps((8, 230, 70)), "final": [8], "final_s": 10.0})
    assert to_finish([a_final, b_final, other_length], 32, SLO_90, 2) is None  # a has it again
    assert to_finish([a_final, b, other_length], 32, SLO_90, FINAL_CONFIGS) is None  # two at most
    assert to_finish([a_final, b, other_length], 32, SLO_90, 1, QUICK_FINAL_CONFIGS) is None  # quick: one
    assert to_finish([measurement(4, 32, (1, 50, 95))], 32, SLO_90, 0) is None  # nothing within


def test_confirmation_and_the_final_step_go_to_the_knee() -> None:
    """The fourth pass's misses were final steps at c=16 with P90 88 of 90 ms, a few per cent over
    c=8's throughput: the capacity, its confirmation and its final step are c=8's now."""
    ramp = steps((4, 196, 24), (8, 235, 40), (16, 240, 88))
    assert capacity_index(ramp, SLO_90) == 1
    assert to_confirm(ramp, SLO_90, set(), floor=0) == 1
    assert final_concurrency(ramp, SLO_90, [], 64) == 8
    confirmed = with_step(ramp, steps((8, 200, 45))[0])  # it fell: c=16 is better by over 5 % now
    assert capacity_index(confirmed, SLO_90) == 2 and to_confirm(confirmed, SLO_90, {1}, floor=0) == 2


def test_a_step_after_a_step_warms_up_for_a_few_round_trips() -> None:
    (fast,) = steps((8, 300, 20))
    (slow,) = steps((32, 350, 90))
    assert warmup_after(None, 0.5) == 0.5  # a fresh server: the full warm-up
    assert warmup_after(fast, 0.5) == 0.2  # 8 x 20 ms is under the floor
    assert warmup_after(slow, 0.5) == 0.5  # 8 x 90 ms is over the full warm-up
    (middle,) = steps((16, 320, 40))
    assert abs(warmup_after(middle, 0.5) - 0.32) < 1e-9
    assert warmup_after(fast, 0.1) == 0.1  # never longer than asked for
    assert warmup_after(SILENT, 0.5) == 0.5


def test_low_steps_are_half_as_long() -> None:
    """Bound 90 ms (SLO_90): a step after one with P90 under 11.25 ms, or the first step of a ramp
    from concurrency 1, is measured for half of --step-s; every other step full length."""
    (quick_start,) = steps((16, 300, 40))
    (low,) = steps((1, 200, 6))
    (edge,) = steps((2, 220, 11.25))
    assert step_seconds(None, 1, 2.0, SLO_90) == 1.0  # a ramp from 1 on a fresh server
    assert step_seconds(None, 16, 2.0, SLO_90) == 2.0  # the quick search's ramp, started high
    assert step_seconds(low, 2, 2.0, SLO_90) == 1.0
    assert step_seconds(edge, 4, 2.0, SLO_90) == 2.0  # not under an eighth of the bound
    assert step_seconds(quick_start, 32, 2.0, SLO_90) == 2.0
    assert step_seconds(SILENT, 4, 2.0, SLO_90) == 2.0
    assert step_seconds(low, 2, 2.0, SLO) == 1.0 and step_seconds(edge, 4, 2.0, SLO) == 1.0  # bound 100 ms
