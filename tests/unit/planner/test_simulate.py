"""The plan simulation: queueing figures it must reproduce, batching, cores, Zipf rates, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.planner.catalog import Catalog
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.simulate import listed_ranking, plan_instances, simulate, zipf_rates
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec

GIB = 2**30
CATALOG = Catalog.model_validate(
    {
        "types": [
            {"name": "cpu.one", "family": "cpu", "vcpus": 1, "memory_bytes": 8 * GIB, "usd_per_hour": 0.1},
            {
                "name": "acc.two",
                "family": "acc",
                "vcpus": 4,
                "memory_bytes": 16 * GIB,
                "usd_per_hour": 1.0,
                "accelerators": {"kind": "test", "count": 1, "memory_bytes": 16 * GIB, "cores": 2},
            },
        ]
    }
)


def fleet(n: int, capacity: dict[str, Capacity], traffic: list[float] | None = None) -> FleetSpec:
    models = [
        ModelSpec(
            name=f"m{i}",
            memory_bytes=1,
            traffic_rps=traffic[i] if traffic else 0.0,
            capacity=capacity,
        )
        for i in range(n)
    ]
    return FleetSpec(models=models)


def test_one_server_matches_the_m_d_1_queue() -> None:
    # Poisson arrivals at 50/s, 10 ms service on one vCPU: rho 0.5, mean wait rho / (2 mu (1 - rho)) = 5 ms
    spec = fleet(1, {"cpu.one": Capacity(service_ms=10)})
    sim = simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 50, duration_s=400, seed=1)
    assert sim.mean_ms == pytest.approx(15.0, rel=0.08)
    assert sim.instances[0].utilisation == pytest.approx(0.5, rel=0.05)
    assert sim.p50_ms >= 10.0 and not sim.overloaded


def test_batching_carries_load_that_single_requests_cannot() -> None:
    # 10 ms alone, 400 req/s declared with batches of 8 (20 ms a full batch); offered 300 req/s
    alone = fleet(1, {"cpu.one": Capacity(service_ms=10)})
    batched = fleet(1, {"cpu.one": Capacity(service_ms=10, rps=400, max_batch_size=8)})
    plan = [("cpu.one", ["m0"], [])]
    slow = simulate(alone, CATALOG, plan, 300, duration_s=20)
    fast = simulate(batched, CATALOG, plan, 300, duration_s=20)
    assert slow.overloaded == [0] and slow.instances[0].offered > 2.5
    assert not fast.overloaded and fast.p99_ms < 60
    assert fast.p90_ms < slow.p90_ms / 10


def test_service_time_defaults_to_the_declared_throughput() -> None:
    spec = fleet(1, {"cpu.one": Capacity(rps=100)})  # 10 ms per request on the one vCPU
    sim = simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 20, duration_s=100)
    assert sim.p50_ms == pytest.approx(10.0, abs=0.5)
    assert sim.instances[0].utilisation == pytest.approx(0.2, rel=0.08)


def test_models_wait_on_their_own_core() -> None:
    # two models on two cores of one instance; all traffic to m0 (Zipf ranks it first, exponent 8)
    spec = fleet(2, {"acc.two": Capacity(service_ms=10)}, traffic=[1.0, 0.0])
    pinned = simulate(
        spec, CATALOG, [("acc.two", ["m0", "m1"], [["m0"], ["m1"]])], 150, zipf_s=8, duration_s=20
    )
    # one core takes m0's 150 req/s at 100/s: overloaded while the other idles
    assert pinned.overloaded == [0]
    assert pinned.instances[0].utilisation == pytest.approx(0.5, rel=0.02)


def test_zipf_rates_add_up_and_follow_the_declared_ranking() -> None:
    spec = fleet(4, {"cpu.one": Capacity(rps=1)}, traffic=[1.0, 5.0, 3.0, 3.0])
    rates = zipf_rates(spec, 100.0, 1.0, np.random.default_rng(0))
    assert sum(rates.values()) == pytest.approx(100.0)
    assert rates["m1"] == pytest.approx(2 * max(rates["m2"], rates["m3"]))  # rank 1 vs rank 2
    assert min(rates["m2"], rates["m3"]) > rates["m0"]
    uniform = zipf_rates(spec, 100.0, 0.0, np.random.default_rng(0))
    assert set(np.round(list(uniform.values()), 9)) == {25.0}


def test_a_seed_reproduces_a_run_and_another_seed_does_not() -> None:
    spec = fleet(3, {"acc.two": Capacity(service_ms=5)})
    plan = plan_instances({"instances": [{"type": "acc.two", "models": ["m0", "m1", "m2"]}]})
    one = simulate(spec, CATALOG, plan, 200, duration_s=5, seed=7)
    again = simulate(spec, CATALOG, plan, 200, duration_s=5, seed=7)
    other = simulate(spec, CATALOG, plan, 200, duration_s=5, seed=8)
    assert (one.requests, one.p90_ms) == (again.requests, again.p90_ms)
    assert (one.requests, one.p90_ms) != (other.requests, other.p90_ms)


def test_bad_input_is_named() -> None:
    spec = fleet(1, {"cpu.one": Capacity(models_per_instance=3)})
    with pytest.raises(PlanInputError, match=r"model 'm0' on cpu.one: no service time"):
        simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 10)
    with pytest.raises(PlanInputError, match=r"models the fleet spec lacks: ghost"):
        simulate(spec, CATALOG, [("cpu.one", ["ghost"], [])], 10)
    with pytest.raises(PlanInputError, match=r"positive rate"):
        simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 0)


def test_adapters_over_one_base_batch_together() -> None:
    # 20 models, 10 ms alone, +1 ms per further request, batches of 64; 200 req/s spread evenly
    cap = {"cpu.one": Capacity(service_ms=10, batch_item_ms=1, max_batch_size=64)}
    apart = fleet(20, cap)
    shared = FleetSpec(models=[m.model_copy(update={"shared_base": "base"}) for m in apart.models])
    plan = [("cpu.one", [f"m{i}" for i in range(20)], [])]
    one_by_one = simulate(apart, CATALOG, plan, 200, zipf_s=0, duration_s=20)
    together = simulate(shared, CATALOG, plan, 200, zipf_s=0, duration_s=20)
    # apart, a model's 10 req/s rarely find company: the queue takes 200 x ~10 ms a second and grows
    assert one_by_one.overloaded == [0]
    # together, a batch of k takes 9 + k ms: cycles of ~11 ms carry ~2.25 requests each, and the
    # queue stays short
    assert not together.overloaded
    assert together.p90_ms < 30 and together.p99_ms < 40


def test_the_batch_item_time_is_taken_as_declared() -> None:
    # every request arrives while the first runs: batches of 2 at 10 + 4 ms
    spec = fleet(1, {"cpu.one": Capacity(service_ms=10, batch_item_ms=4, max_batch_size=2)})
    sim = simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 1000, duration_s=5)
    assert sim.instances[0].offered == pytest.approx(1000 * 0.014 / 2, rel=0.05)


def test_listed_ranks_follow_the_spec_as_the_load_generator_does() -> None:
    spec = fleet(5, {"cpu.one": Capacity(rps=1)}, traffic=[0.0, 0.0, 9.0, 0.0, 0.0])
    for seed in range(3):
        rates = zipf_rates(spec, 100.0, 1.0, np.random.default_rng(seed), listed_ranking(spec))
        ranked = sorted(rates, key=rates.__getitem__, reverse=True)
        assert ranked == ["m2", "m0", "m1", "m3", "m4"]  # declared traffic first, then the listing
        weights = 1 / np.arange(1, 6)
        assert rates["m0"] == pytest.approx(100 * weights[1] / weights.sum())


def test_a_given_ranking_is_followed_and_must_list_every_model_once() -> None:
    spec = fleet(3, {"cpu.one": Capacity(rps=1)})
    rates = zipf_rates(spec, 60.0, 1.0, np.random.default_rng(0), ["m2", "m0", "m1"])
    assert rates == pytest.approx({"m2": 60 * 6 / 11, "m0": 60 * 3 / 11, "m1": 60 * 2 / 11})
    for bad in (["m0", "m1"], ["m0", "m1", "m1"], ["m0", "m1", "x"]):
        with pytest.raises(PlanInputError, match="must list each of the fleet's 3 models once"):
            zipf_rates(spec, 60.0, 1.0, np.random.default_rng(0), bad)


def test_varying_service_times_wait_as_the_m_g_1_queue_does() -> None:
    # rho 0.5, 10 ms mean, CV 1: Pollaczek-Khinchine mean wait rho (1 + CV^2) / (2 mu (1 - rho)) = 10 ms,
    # twice the constant service's 5 ms (test_one_server_matches_the_m_d_1_queue)
    spec = fleet(1, {"cpu.one": Capacity(service_ms=10, service_cv=1.0)})
    sim = simulate(spec, CATALOG, [("cpu.one", ["m0"], [])], 50, duration_s=400, seed=1)
    assert sim.mean_ms == pytest.approx(20.0, rel=0.08)
    assert sim.instances[0].utilisation == pytest.approx(0.5, rel=0.05)


def test_measured_batch_times_are_followed_between_and_beyond_the_points() -> None:
    from modelfleet.planner.simulate import batch_times

    assert batch_times({1: 10.0, 3: 14.0, 5: 30.0}, 6) == pytest.approx((10, 12, 14, 22, 30, 38))
    assert batch_times({2: 8.0}, 3) == pytest.approx((4, 8, 12))  # one point: in proportion
    assert batch_times({2: 8.0, 4: 10.0}, 4) == pytest.approx((7, 8, 9, 10))  # below: the first slope
    assert batch_times({1: 5.0, 2: 4.0}, 3) == pytest.approx((5, 5, 5))  # never shorter than a smaller batch


def test_a_batch_time_table_sets_what_batches_cost() -> None:
    # all requests arrive during the first run: batches of 4 at 16 ms (the table), not 4 x 10 ms
    table = fleet(1, {"cpu.one": Capacity(batch_ms={1: 10, 4: 16}, max_batch_size=4)})
    sim = simulate(table, CATALOG, [("cpu.one", ["m0"], [])], 1000, duration_s=5)
    assert sim.instances[0].offered == pytest.approx(1000 * 0.016 / 4, rel=0.05)
    with pytest.raises(ValueError, match="sizes must be at least 1"):
        Capacity(batch_ms={0: 5})
    with pytest.raises(ValueError, match="at least one batch size"):
        Capacity(batch_ms={})


def test_the_mean_batch_is_what_requests_ran_in() -> None:
    # below one request per service time batches stay single; far above it they fill up to the cap
    cap = {"cpu.one": Capacity(service_ms=10, batch_item_ms=1, max_batch_size=4)}
    plan = [("cpu.one", ["m0"], [])]
    quiet = simulate(fleet(1, cap), CATALOG, plan, 0.5, duration_s=200)
    busy = simulate(fleet(1, cap), CATALOG, plan, 1000, duration_s=5)
    assert quiet.instances[0].mean_batch == 1.0
    assert busy.instances[0].mean_batch == pytest.approx(4.0, rel=0.01)


def test_the_overhead_adds_to_latency_and_not_to_the_work() -> None:
    plan = [("cpu.one", ["m0"], [])]
    bare = simulate(fleet(1, {"cpu.one": Capacity(service_ms=10)}), CATALOG, plan, 50, duration_s=50)
    sent = simulate(
        fleet(1, {"cpu.one": Capacity(service_ms=10, overhead_ms=3)}), CATALOG, plan, 50, duration_s=50
    )
    assert (sent.p50_ms, sent.p90_ms, sent.p99_ms) == pytest.approx(
        (bare.p50_ms + 3, bare.p90_ms + 3, bare.p99_ms + 3)
    )
    assert sent.instances[0].utilisation == bare.instances[0].utilisation
