"""`modelfleet plan` / `modelfleet advise` through the command line (typer's runner, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import build_app

ROOT = Path(__file__).resolve().parents[2]
SEED_002 = ROOT / "examples" / "seed-002" / "fleet.yaml"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_plan_json_reproduces_seed_002(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["plan", str(SEED_002), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cost_per_hour"] == 45.974
    assert doc["lower_bound_cost_per_hour"] == 45.974
    assert doc["gap"] == 0.0
    assert doc["by_type"] == {"inf1.2xlarge": 127}
    assert len(doc["instances"]) == 127
    assert sum(len(i["models"]) for i in doc["instances"]) == 3040


def test_plan_max_instances_40(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["plan", str(SEED_002), "--json", "--max-instances", "40"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cost_per_hour"] == 47.2
    assert doc["by_type"] == {"inf1.6xlarge": 40}


def test_plan_out_writes_the_plan_and_charts(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    result = runner.invoke(build_app(), ["plan", str(SEED_002), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "45.974" in result.stdout and "gap 0.00%" in result.stdout
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert plan["cost_per_hour"] == 45.974 and plan["instances"][0]["type"] == "inf1.2xlarge"
    for chart in ("packing.png", "cost_by_type.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"


BAD = {
    "too large": (
        ("memory_bytes: 400_000_000", "memory_bytes: 900_000_000_000"),
        "larger than every instance type",
    ),
    "unknown type": (("inf1.xlarge: {", "inf7.xlarge: {"), "unknown instance type or family 'inf7.xlarge'"),
    "contradictory": (
        ("headroom: 0.0", "headroom: 0.0\n  min_instances: 9\n  max_instances: 3"),
        "contradictory constraints",
    ),
    "bad field": (("traffic_rps: 2.049342", "traffic: 2"), "fleet.yaml:31: models.0.traffic: Extra inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_and_writes_nothing(runner: CliRunner, tmp_path: Path, case: str) -> None:
    (old, new), message = BAD[case]
    text = SEED_002.read_text()
    assert old in text
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text.replace(old, new))
    out = tmp_path / "out"
    result = runner.invoke(build_app(), ["plan", str(fleet), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    if message is not None:
        assert message in " ".join(result.stderr.split())


def test_infeasible_slo_everywhere(runner: CliRunner, tmp_path: Path) -> None:
    text = SEED_002.read_text()
    for n in ("24", "18", "11", "76", "72"):
        old = f"{{models_per_instance: {n},"
        assert old in text
        text = text.replace(old, f"{{models_per_instance: {n}, latency_ms: 150,")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(text)
    result = runner.invoke(build_app(), ["plan", str(fleet), "--json"])
    assert result.exit_code == 2
    assert "infeasible SLO for model 'bert-base-cased-{i:04d}' (3040 models)" in " ".join(
        result.stderr.split()
    )
    assert result.stdout == ""


def test_plan_simulates_seed_002_at_its_rate(runner: CliRunner, tmp_path: Path) -> None:
    args = ["plan", str(SEED_002), "--max-instances", "40", "--simulate", "6230", "--zipf", "0"]
    result = runner.invoke(build_app(), [*args, "--simulate-s", "5", "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    sim = json.loads(result.stdout)["simulation"]
    assert len(sim["instances"]) == 40 and sim["overloaded_instances"] == 0
    assert sim["requests"] == pytest.approx(6230 * 4.5, rel=0.03)  # after the 10 % warm-up
    assert 24.0 <= sim["p50_ms"] <= sim["p90_ms"] <= sim["p99_ms"]  # 24 ms a request, plus queueing
    # 6,230 req/s x 24 ms over 40 x 16 NeuronCores: 23 % busy
    assert sum(i["utilisation"] for i in sim["instances"]) / 40 == pytest.approx(6230 * 0.024 / 640, rel=0.05)
    assert json.loads((tmp_path / "simulation.json").read_text())["p90_ms"] == sim["p90_ms"]
    assert (tmp_path / "simulation.png").read_bytes()[:4] == b"\x89PNG"


def test_simulate_without_service_times_exits_2_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(SEED_002.read_text().replace(", service_ms: 24}", "}"))
    out = tmp_path / "out"
    result = runner.invoke(build_app(), ["plan", str(fleet), "--simulate", "100", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "no service time to simulate with" in " ".join(result.stderr.split())
    assert not out.exists()


def test_advise_writes_the_spider_chart(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        build_app(), ["advise", str(SEED_002), "--out", str(tmp_path), "--time-limit-s", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "recommended: packed fleet (plan)" in result.stdout
    assert (tmp_path / "fitness.png").read_bytes()[:4] == b"\x89PNG"
    assert yaml.safe_load((tmp_path / "advice.yaml").read_text())["recommended"] == "packed"


def test_a_fleet_of_profiled_models_plans_and_simulates(runner: CliRunner, tmp_path: Path) -> None:
    from modelfleet.tune.profile import write_profile
    from tests.unit.planner.test_profiles import FAST, profile

    write_profile(profile([FAST]), tmp_path / "bert.json")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "slo: {latency_ms: 100}\nmodels:\n"
        '  - {pattern: "bert-{i:02d}", count: 20, traffic_rps: 12, profile: bert.json}\n',
        encoding="utf-8",
    )
    result = runner.invoke(
        build_app(), ["plan", str(fleet), "--json", "--simulate", "200", "--simulate-s", "20"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["by_type"] == {"c7i.2xlarge": 2}  # 240 req/s declared over 120 req/s instances
    sim = doc["simulation"]
    # the profile's P50 at concurrency 1 (11 ms) is the service time; 16 vCPUs at 14 % rarely queue
    assert sim["p50_ms"] == pytest.approx(11.0)
    assert 11.0 <= sim["p90_ms"] <= sim["p99_ms"] < 100.0
    assert sim["overloaded_instances"] == 0
