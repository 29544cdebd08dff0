"""The restart back-off, with injected time."""

from __future__ import annotations

from modelfleet.workers.supervisor import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_first_crash_restarts_at_once() -> None:
    clock = Clock()
    backoff = Backoff(clock)
    backoff.started()
    clock.now = 100
    assert backoff.died() == 0.0


def test_a_crash_loop_backs_off_doubling_up_to_the_cap() -> None:
    clock = Clock()
    backoff = Backoff(clock, first_s=0.5, max_s=4.0, healthy_s=10.0)
    delays = []
    for _ in range(7):
        backoff.started()
        clock.now += 1.0  # dies a second after each start
        delay = backoff.died()
        delays.append(delay)
        clock.now += delay
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_healthy_run_resets_the_back_off() -> None:
    clock = Clock()
    backoff = Backoff(clock, first_s=0.5, healthy_s=10.0)
    for _ in range(3):
        backoff.started()
        clock.now += 1
        backoff.died()
    backoff.started()
    clock.now += 60
    assert backoff.died() == 0.0
