"""Fleet spec and catalogue: typed, and every bad input named with file, line, field and models."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.planner.catalog import Catalog, load_catalog
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.problem import build_problem, with_max_total
from modelfleet.planner.spec import load_fleet_spec

BERT = """
slo: {latency_ms: 100}
models:
  - pattern: "bert-{i:02d}"
    count: 10
    memory_bytes: 400_000_000
    traffic_rps: 2
    capacity:
      inf1.2xlarge: {models_per_instance: 24}
"""


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def plan_input(tmp_path: Path, text: str, catalog: Catalog | None = None) -> None:
    build_problem(load_fleet_spec(write(tmp_path, text)), catalog or load_catalog())


def test_the_shipped_catalogue_is_sourced_and_says_which_prices_are_verified(catalog: Catalog) -> None:
    assert {"inf1", "inf2", "g4dn", "g5", "c7i", "c7a", "m7i", "r7i"} <= catalog.families()
    for item in catalog.types:
        assert item.usd_per_hour and item.price_source
        # a date only where the price was read on a known day, and only those are verified
        assert (item.price_date is not None) == item.price_verified
        assert item.price_verified or item.price_source.startswith("UNVERIFIED")
    verified = {t.name for t in catalog.types if t.price_verified}
    assert verified == {"inf1.xlarge", "inf1.2xlarge", "inf1.6xlarge", "g4dn.xlarge", "g4dn.12xlarge"}
    table = {t.name: t.usd_per_hour for t in catalog.types}
    assert table["inf1.2xlarge"] == 0.362 and table["inf1.6xlarge"] == 1.180
    assert table["inf1.xlarge"] == 0.228 and table["g4dn.xlarge"] == 0.526 and table["g4dn.12xlarge"] == 3.912


def test_a_pattern_expands_to_its_count(tmp_path: Path) -> None:
    spec = load_fleet_spec(write(tmp_path, BERT))
    assert spec.models[0].names()[:2] == ["bert-00", "bert-01"]
    assert len(spec.models[0].names()) == 10


def test_an_unknown_field_names_the_file_line_and_field(tmp_path: Path) -> None:
    text = BERT.replace("    traffic_rps: 2\n", "    traffic_rps: 2\n    memory_gb: 3\n")
    with pytest.raises(PlanInputError, match=r"fleet.yaml:8: models\.0\.memory_gb: Extra inputs"):
        load_fleet_spec(write(tmp_path, text))


def test_a_wrong_type_names_the_line(tmp_path: Path) -> None:
    text = BERT.replace("traffic_rps: 2", "traffic_rps: lots")
    with pytest.raises(PlanInputError, match=r"fleet.yaml:7: models\.0\.traffic_rps"):
        load_fleet_spec(write(tmp_path, text))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match=r"fleet.yaml:3: not valid YAML"):
        load_fleet_spec(write(tmp_path, "models:\n  - name: a\n  bad: [\n"))


def test_a_pattern_needs_its_field(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match=r"exactly one field \{i\}"):
        load_fleet_spec(write(tmp_path, BERT.replace("bert-{i:02d}", "bert")))


def test_a_missing_profile_names_the_spec_the_model_and_the_file(tmp_path: Path) -> None:
    text = BERT.replace("    traffic_rps: 2\n", "    traffic_rps: 2\n    profile: bert/1/profile.json\n")
    with pytest.raises(PlanInputError, match=r"fleet.yaml: model 'bert-\{i:02d\}': profile .*does not exist"):
        load_fleet_spec(write(tmp_path, text))


def test_unknown_instance_type(tmp_path: Path) -> None:
    with pytest.raises(
        PlanInputError,
        match=r"bert-\{i:02d\}' \(10 models\): capacity for unknown instance type or family 'inf9.huge'",
    ):
        plan_input(tmp_path, BERT.replace("inf1.2xlarge", "inf9.huge"))


def test_unknown_type_in_the_options(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="unknown instance type 'x1.tiny'"):
        plan_input(tmp_path, BERT + "options: {max_per_type: {x1.tiny: 3}}\n")


def test_a_model_larger_than_every_type(tmp_path: Path) -> None:
    with pytest.raises(
        PlanInputError,
        match=r"'bert-\{i:02d\}' \(10 models\) is larger than every instance type.*inf1.2xlarge: memory 93.1 GiB > 16 GiB",
    ):
        plan_input(tmp_path, BERT.replace("400_000_000", "100_000_000_000"))


def test_an_infeasible_slo_by_latency(tmp_path: Path) -> None:
    text = BERT.replace("{models_per_instance: 24}", "{models_per_instance: 24, latency_ms: 140}")
    with pytest.raises(
        PlanInputError, match=r"infeasible SLO for model 'bert-\{i:02d\}'.*latency 140 ms > SLO 100 ms"
    ):
        plan_input(tmp_path, text)


def test_an_infeasible_slo_by_throughput(tmp_path: Path) -> None:
    text = BERT.replace("{models_per_instance: 24}", "{rps: 1.5}").replace("inf1.2xlarge", "c7i.2xlarge")
    with pytest.raises(
        PlanInputError, match=r"infeasible SLO .*needs 2 req/s per replica, one instance serves 1.5"
    ):
        plan_input(tmp_path, text)


def test_a_copy_on_an_accelerator_gets_one_cores_throughput(tmp_path: Path) -> None:
    # inf1.2xlarge has 4 NeuronCores: 6 req/s for the instance is 1.5 per core, under the 2 asked
    text = BERT.replace("{models_per_instance: 24}", "{rps: 6}")
    with pytest.raises(
        PlanInputError, match=r"infeasible SLO .*needs 2 req/s per replica, one accelerator core serves 1.5"
    ):
        plan_input(tmp_path, text)


def test_more_replicas_fix_the_throughput(tmp_path: Path) -> None:
    text = BERT.replace("{models_per_instance: 24}", "{rps: 6}").replace(
        "traffic_rps: 2", "traffic_rps: 2\n    replicas: 2"
    )
    plan_input(tmp_path, text)  # 1 req/s per replica, 1.5 per NeuronCore


def test_a_missing_price(tmp_path: Path) -> None:
    catalog = write(
        tmp_path,
        "types:\n  - {name: inf1.2xlarge, family: inf1, vcpus: 8, memory_bytes: 17179869184}\n",
        "catalog.yaml",
    )
    with pytest.raises(PlanInputError, match=r"'inf1.2xlarge' has no price in the catalogue \(models 'bert-"):
        plan_input(tmp_path, BERT, load_catalog(catalog))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{min_instances: 5, max_instances: 3}", "min_instances 5 > max_instances 3"),
        (
            "{min_per_type: {inf1.2xlarge: 4}, max_per_type: {inf1.2xlarge: 2}}",
            r"min_per_type\[inf1.2xlarge\] 4 > max_per_type",
        ),
        ("{min_per_type: {inf1.2xlarge: 4}, max_instances: 3}", "the per-type minimums add up to 4"),
    ],
)
def test_contradictory_limits(tmp_path: Path, options: str, message: str) -> None:
    with pytest.raises(PlanInputError, match="contradictory constraints: " + message):
        plan_input(tmp_path, BERT + f"options: {options}\n")


def test_contradictory_replicas_and_max_instances(tmp_path: Path) -> None:
    problem = build_problem(
        load_fleet_spec(write(tmp_path, BERT.replace("traffic_rps: 2", "traffic_rps: 2\n    replicas: 3"))),
        load_catalog(),
    )
    with pytest.raises(
        PlanInputError, match="'bert-00' wants 3 replicas on distinct instances, but max_instances is 2"
    ):
        with_max_total(problem, 2)


def test_contradictory_pin(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="pinned to family 'g5' but declares capacity for no g5 type"):
        plan_input(tmp_path, BERT.replace("traffic_rps: 2", "traffic_rps: 2\n    family: g5"))


def test_never_with_itself(tmp_path: Path) -> None:
    text = BERT.replace("traffic_rps: 2", "traffic_rps: 2\n    never_with: ['bert-{i:02d}']")
    with pytest.raises(PlanInputError, match="'bert-00' is listed in its own never_with"):
        plan_input(tmp_path, text)


def test_never_with_an_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="never_with names unknown model 'gpt'"):
        plan_input(tmp_path, BERT.replace("traffic_rps: 2", "traffic_rps: 2\n    never_with: [gpt]"))
