"""Fleet-spec models that reference a profile.json written by `modelfleet profile`'s own writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.planner.catalog import Catalog
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.problem import COMPUTE_SCALE, Dim, build_problem
from modelfleet.planner.solve import Method, solve
from modelfleet.planner.spec import load_fleet_spec
from modelfleet.tune.profile import write_profile
from modelfleet.tune.schema import Machine, Measurement, Profile, Settings, Slo, Step

from .conftest import check_plan

PSS = 700_000_000


def step(concurrency: int, rps: float, p50: float, p90: float) -> Step:
    return Step(
        concurrency=concurrency,
        requests=1000,
        errors=0,
        throughput_per_s=rps,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p90 * 1.5,
    )


def measured(batch: int, steps: list[Step], seq_len: int = 32, memory: int | None = PSS) -> Measurement:
    return Measurement(
        settings=Settings(max_batch_size=batch, max_queue_delay_us=2000 if batch > 1 else 0),
        seq_len=seq_len,
        steps=steps,
        load_s=1.0,
        memory_bytes=memory,
        stopped="slo",
    )


def profile(measurements: list[Measurement], instance_type: str | None = "c7i.2xlarge") -> Profile:
    return Profile(
        model="bert",
        version="1",
        model_digest="0" * 64,
        created_at="2026-12-05T00:00:00Z",
        machine=Machine(
            nproc=8,
            cpu_model="test CPU",
            memory_bytes=2**34,
            platform="linux",
            python="3.11",
            modelfleet="0",
            onnxruntime=None,
        ),
        instance_type=instance_type,
        slo=Slo(p90_ms=100),
        search="brute",
        step_duration_s=1.0,
        elapsed_s=10.0,
        measurements=measurements,
    )


# batch 1: 40 req/s within the SLO; batch 8: 120 req/s within it, 200 req/s beyond it
SLOW = measured(1, [step(1, 20, 10, 12), step(4, 40, 60, 90)])
FAST = measured(8, [step(1, 18, 11, 13), step(8, 120, 50, 80), step(16, 200, 90, 150)])

FLEET = """
slo: {latency_ms: 100}
models:
  - pattern: "bert-{i:02d}"
    count: 20
    traffic_rps: 12
    profile: %s
"""


def fleet(tmp_path: Path, prof: Profile, ref: str = "profiles/bert.json") -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    write_profile(prof, folder / "bert.json")
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET % ref, encoding="utf-8")
    return path


def test_capacity_memory_and_service_time_come_from_the_profile(tmp_path: Path, catalog: Catalog) -> None:
    spec = load_fleet_spec(fleet(tmp_path, profile([SLOW, FAST])))
    entry = spec.models[0]
    assert entry.memory_bytes == PSS
    cap = entry.capacity["c7i.2xlarge"]
    # the best step within P90 <= 100 ms: batch 8 at 120 req/s (not 200 req/s at 150 ms)
    assert (cap.rps, cap.latency_ms, cap.max_batch_size, cap.service_ms) == (120, 80, 8, 11)
    problem = build_problem(spec, catalog)
    assert problem.demand[0, 0, Dim.COMPUTE] == COMPUTE_SCALE * 12 // 120
    plan = solve(problem, Method.AUTO, time_limit_s=5)
    check_plan(problem, plan)
    # 20 models x 12 req/s at 120 req/s each: two instances by compute (memory: 20 x 0.7 GB fits one)
    assert plan.by_type == {"c7i.2xlarge": 2}


def test_the_fleet_slo_picks_the_step(tmp_path: Path) -> None:
    path = fleet(tmp_path, profile([SLOW, FAST]))
    path.write_text(path.read_text().replace("latency_ms: 100", "latency_ms: 70"), encoding="utf-8")
    cap = load_fleet_spec(path).models[0].capacity["c7i.2xlarge"]
    assert (cap.rps, cap.latency_ms) == (20, 12)  # batch 8 at 80 ms is over 70 ms; batch 1 at 40 req/s too


def test_the_profiles_margin_applies_to_the_fleet_slo(tmp_path: Path) -> None:
    # margin 0.9: batch 8's 120 req/s at P90 80 ms is within 0.9 x 100 ms; at 0.75 it is not
    for margin, expected in ((0.9, (120, 80)), (0.75, (20, 12))):
        prof = profile([SLOW, FAST]).model_copy(update={"slo": Slo(p90_ms=100, margin=margin)})
        cap = load_fleet_spec(fleet(tmp_path, prof)).models[0].capacity["c7i.2xlarge"]
        assert (cap.rps, cap.latency_ms) == expected


def test_the_capacity_is_read_as_recommend_reads_it(tmp_path: Path) -> None:
    """The knee within the bound (c=8: c=16 adds under 5 % at twice the latency), and a final long
    step within it over the short windows: `modelfleet.tune.best_measurement`, what recommend picks."""
    knee = measured(8, [step(4, 100, 20, 30), step(8, 118, 30, 45), step(16, 122, 60, 85)])
    cap = load_fleet_spec(fleet(tmp_path, profile([SLOW, knee]))).models[0].capacity["c7i.2xlarge"]
    assert (cap.rps, cap.latency_ms) == (118, 45)
    final = knee.model_copy(
        update={"steps": [*knee.steps[:2], step(16, 110, 60, 80)], "final": [16], "final_s": 10.0}
    )
    cap = load_fleet_spec(fleet(tmp_path, profile([SLOW, final]))).models[0].capacity["c7i.2xlarge"]
    assert (cap.rps, cap.latency_ms) == (110, 80)  # the final step, below the short window at c=8


def test_scale_to_gives_other_types_a_per_core_capacity(tmp_path: Path, catalog: Catalog) -> None:
    ref = "{path: profiles/bert.json, scale_to: [c7i.4xlarge, m7i]}"
    spec = load_fleet_spec(fleet(tmp_path, profile([FAST]), ref))
    caps = spec.models[0].capacity
    assert caps["c7i.4xlarge"].rps_per_core == caps["m7i"].rps_per_core == 120 / 8
    problem = build_problem(spec, catalog)
    four_x = [t.name for t in problem.types].index("c7i.4xlarge")
    assert problem.demand[0, four_x, Dim.COMPUTE] == -(-COMPUTE_SCALE * 12 // (15 * 16))


def test_declared_numbers_win_over_the_profile(tmp_path: Path) -> None:
    path = fleet(tmp_path, profile([FAST]))
    text = path.read_text() + "    memory_bytes: 5_000_000\n    capacity: {c7i.2xlarge: {rps: 50}}\n"
    path.write_text(text, encoding="utf-8")
    entry = load_fleet_spec(path).models[0]
    assert entry.memory_bytes == 5_000_000 and entry.capacity["c7i.2xlarge"].rps == 50


@pytest.mark.parametrize(
    ("prof", "ref", "message"),
    [
        (
            profile([measured(1, [step(1, 5, 150, 200)])]),
            None,
            r"infeasible SLO: no configuration .* P90 within 100 ms",
        ),
        (profile([FAST], instance_type=None), None, r"no instance type"),
        (profile([measured(8, FAST.steps, memory=None)]), None, r"measured no memory"),
        (profile([FAST]), "profiles/missing.json", r"missing\.json does not exist"),
        (profile([FAST]), "{path: profiles/bert.json, seq_len: 128}", r"no measurement at seq_len 128"),
    ],
)
def test_bad_profiles_are_named(tmp_path: Path, prof: Profile, ref: str | None, message: str) -> None:
    path = fleet(tmp_path, prof, ref or "profiles/bert.json")
    with pytest.raises(PlanInputError, match=r"model 'bert-\{i:02d\}': profile .*" + message):
        load_fleet_spec(path)


def test_a_model_needs_capacity_or_a_profile(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("models:\n  - {name: a, memory_bytes: 1}\n", encoding="utf-8")
    with pytest.raises(PlanInputError, match=r"give capacity .*, or a profile"):
        load_fleet_spec(path)
