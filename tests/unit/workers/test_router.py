"""Routing decisions with an injected clock: sticky, placement, hot copies, cooling, worker loss."""

from __future__ import annotations

import pytest

from modelfleet.errors import Unavailable
from modelfleet.workers.router import Router

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def router(workers: int = 2, **options: float) -> tuple[Router, Clock]:
    clock = Clock()
    r = Router(clock, **options)  # type: ignore[arg-type]
    for i in range(workers):
        r.worker_up(i, 4 * GiB)
    return r, clock


def place(r: Router, name: str, nbytes: int) -> int:
    worker = r.place(name, nbytes)
    r.loaded(name, worker, nbytes, nbytes)
    return worker


def test_a_model_resident_nowhere_must_be_placed_first() -> None:
    r, _ = router()
    assert r.route("bert") == (None, None)


def test_sticky_a_resident_model_goes_to_its_worker_every_time() -> None:
    r, _ = router()
    worker = place(r, "bert", GiB)
    for _ in range(5):
        chosen, grow = r.route("bert")
        assert (chosen, grow) == (worker, None)
        r.end("bert", worker)
    assert r.placements("bert") == [worker]


def test_placement_prefers_the_most_free_budget_then_the_least_load() -> None:
    r, _ = router(3)
    assert place(r, "a", 2 * GiB) == 0
    assert place(r, "b", GiB) == 1
    assert place(r, "c", GiB) == 2
    assert place(r, "d", GiB) in (1, 2)  # 3 GiB free on both, 2 on worker 0
    r2, _ = router(2)
    r2.worker_up(1, 4 * GiB)
    place(r2, "x", 0)  # worker 0 (tie on budget: lowest id)
    r2.route("x")  # one request in flight on worker 0
    assert place(r2, "y", 0) == 1


def test_a_load_under_way_is_not_routed_to_and_a_failed_one_is_forgotten() -> None:
    r, _ = router()
    worker = r.place("bert", GiB)
    assert r.route("bert") == (None, None)
    r.load_failed("bert", worker, GiB)
    assert r.placements("bert") == []
    assert r.workers[worker].used_bytes == 0


def test_a_hot_model_gets_a_copy_elsewhere_and_requests_spread() -> None:
    r, clock = router(hot_in_flight=2, hot_for_s=1.0)
    home = place(r, "bert", GiB)
    for _ in range(2):
        assert r.route("bert") == (home, None)
    assert r.route("bert") == (home, None)  # every copy at the threshold: hot from now
    clock.now += 0.5
    assert r.route("bert") == (home, None)  # not for long enough yet
    clock.now += 0.6
    chosen, grow = r.route("bert")
    assert (chosen, grow) == (home, 1 - home)
    assert r.route("bert") == (home, None)  # the copy is loading: not routed to, not asked again
    r.loaded("bert", 1 - home, GiB)
    assert r.route("bert")[0] == 1 - home  # least in flight
    assert sorted(r.placements("bert")) == [0, 1]


def test_short_dips_of_a_batching_worker_do_not_cool_a_hot_model() -> None:
    r, clock = router(hot_in_flight=4, hot_for_s=1.0)
    home = place(r, "bert", GiB)
    grown = None
    for _ in range(12):  # every 100 ms a batch of 4 is answered at once, then the clients resend
        for _ in range(4):
            _, grow = r.route("bert")
            grown = grown if grow is None else grow
        for _ in range(4):
            r.end("bert", home)
        clock.now += 0.1
    assert grown == 1 - home
    r2, clock2 = router(hot_in_flight=4, hot_for_s=1.0)
    home = place(r2, "bert", GiB)
    for _ in range(5):
        r2.route("bert")
    clock2.now += 0.9
    for _ in range(5):
        r2.end("bert", home)
    clock2.now += 0.6  # quiet for more than half of hot_for_s: not hot any more
    assert r2.route("bert") == (home, None)


def test_no_copy_while_traffic_stays_under_the_threshold_or_no_worker_is_spare() -> None:
    r, clock = router(1, hot_in_flight=1, hot_for_s=0.0)
    place(r, "bert", GiB)
    for _ in range(4):
        clock.now += 1
        assert r.route("bert")[1] is None  # one worker: nowhere to copy to
    r2, clock2 = router(2, hot_in_flight=8, hot_for_s=0.0)
    home = place(r2, "bert", GiB)
    for _ in range(20):
        clock2.now += 1
        assert r2.route("bert") == (home, None)
        r2.end("bert", home)


def test_an_idle_extra_copy_cools_down_and_the_last_copy_stays() -> None:
    r, clock = router(cool_after_s=30.0)
    place(r, "bert", GiB)
    r.place("bert", GiB)  # the other worker
    r.loaded("bert", 1, GiB, GiB)
    clock.now += 1
    first, _ = r.route("bert")
    r.end("bert", first)  # the other copy stays unused
    clock.now += 28
    assert r.cooled() == []
    clock.now += 2
    assert r.cooled() == [("bert", 1 - first)]
    assert r.placements("bert") == [first]
    clock.now += 100
    assert r.cooled() == []  # never the last copy


def test_a_lost_worker_gets_nothing_and_its_models_are_placed_elsewhere() -> None:
    r, _ = router()
    worker = place(r, "bert", GiB)
    chosen, _ = r.route("bert")
    assert r.worker_lost(worker) == ["bert"]
    r.end("bert", chosen)  # the failed request finishing counts nowhere
    assert r.route("bert") == (None, None)
    assert r.place("bert") == 1 - worker
    r.worker_lost(1 - worker)
    with pytest.raises(Unavailable, match="no worker is running"):
        r.place("other")
    r.worker_up(worker, GiB)
    assert r.place("other") == worker


def test_sync_follows_the_workers_own_evictions_and_loads() -> None:
    r, _ = router()
    worker = place(r, "bert", GiB)
    r.sync(worker, {"step": 10}, 10)  # bert evicted by the worker's LRU, a pipeline step loaded
    assert r.placements("bert") == []
    assert r.placements("step") == [worker]
    assert r.workers[worker].used_bytes == 10


def neuron_router() -> tuple[Router, Clock]:
    """Worker 0 without cores, 1 with a group of 2, 2 with a group of 4."""
    clock = Clock()
    r = Router(clock, hot_in_flight=1, hot_for_s=1.0)
    for worker, cores in ((0, 0), (1, 2), (2, 4)):
        r.worker_up(worker, 4 * GiB, neuron_cores=cores)
    return r, clock


def test_neuron_models_go_only_to_a_group_large_enough_the_smallest_first() -> None:
    r, _ = neuron_router()
    assert r.place("small", neuron_cores=1) == 1  # the 2-core group: the 4-core one stays whole
    assert r.place("wide", neuron_cores=3) == 2
    assert r.place("plain") == 0  # never a Neuron worker while a plain one is there
    r.worker_lost(2)
    with pytest.raises(Unavailable, match="no worker holding 3 NeuronCore"):
        r.place("wider", neuron_cores=3)
    r.worker_lost(0)
    with pytest.raises(Unavailable, match="no worker is running to load model 'plain2'"):
        r.place("plain2")  # plain workers exist, only restarting: wait for them


def test_without_plain_workers_other_models_share_the_neuron_workers() -> None:
    clock = Clock()
    r = Router(clock)
    r.worker_up(0, 4 * GiB, neuron_cores=1)
    assert r.place("tokenizer") == 0


def test_a_hot_neuron_model_is_copied_only_to_another_neuron_worker() -> None:
    r, clock = neuron_router()
    r.worker_up(3, 8 * GiB)  # the most free budget, but no cores
    home = place_neuron(r, "bert", 2)
    assert home == 1
    r.route("bert")
    clock.now += 1.1
    assert r.route("bert") == (1, 2)  # hot: the copy goes to the other group, not worker 0 or 3


def place_neuron(r: Router, name: str, cores: int) -> int:
    worker = r.place(name, GiB, neuron_cores=cores)
    r.loaded(name, worker, GiB, GiB)
    return worker
