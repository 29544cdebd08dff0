"""`modelfleet recommend` through the command line: seeds 003 and 004 reproduced, measured profiles
(with their warnings and --strict), --apply, and every bad input answered with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.planner.catalog import load_catalog
from modelfleet.tune.machine import this_machine, version_digest
from modelfleet.tune.schema import Machine, Measurement, Profile, Settings, Slo, Step
from tests.models import identity, write_config

ROOT = Path(__file__).resolve().parents[2]
SEED_003 = ROOT / "examples" / "seed-003" / "profiles.yaml"
SEED_004 = ROOT / "examples" / "seed-004" / "profiles.yaml"

# seed 003's results table: config, instance type -> (initial instance count, cost per hour)
SEED_003_TABLE = {
    ("pt-base", "ml.g4dn.xlarge"): (62, 45.6568),
    ("pt-db", "ml.g4dn.xlarge"): (57, 41.9748),
    ("pt-ig", "ml.g4dn.xlarge"): (34, 25.0376),
    ("pt-ig-db", "ml.g4dn.xlarge"): (34, 25.0376),
    ("trt-base", "ml.g4dn.xlarge"): (47, 34.6108),
    ("trt-db", "ml.g4dn.xlarge"): (28, 20.6192),
    ("trt-ig", "ml.g4dn.xlarge"): (14, 10.3096),
    ("trt-db-ig", "ml.g4dn.xlarge"): (10, 7.364),
    ("pt-base", "ml.g4dn.2xlarge"): (56, 52.64),
    ("pt-db", "ml.g4dn.2xlarge"): (59, 55.46),
    ("pt-ig", "ml.g4dn.2xlarge"): (29, 27.26),
    ("pt-ig-db", "ml.g4dn.2xlarge"): (30, 28.2),
    ("trt-base", "ml.g4dn.2xlarge"): (42, 39.48),
    ("trt-db", "ml.g4dn.2xlarge"): (23, 21.62),
    ("trt-ig", "ml.g4dn.2xlarge"): (23, 21.62),
    ("trt-db-ig", "ml.g4dn.2xlarge"): (22, 20.68),
    ("pt-base", "ml.g4dn.12xlarge"): (15, 73.35),
    ("pt-db", "ml.g4dn.12xlarge"): (15, 73.35),
    ("pt-ig", "ml.g4dn.12xlarge"): (8, 39.12),
    ("pt-ig-db", "ml.g4dn.12xlarge"): (8, 39.12),
    ("trt-base", "ml.g4dn.12xlarge"): (11, 53.79),
    ("trt-db", "ml.g4dn.12xlarge"): (6, 29.34),
    ("trt-ig", "ml.g4dn.12xlarge"): (6, 29.34),
    ("trt-db-ig", "ml.g4dn.12xlarge"): (6, 29.34),
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def recommend(runner: CliRunner, *args: str) -> tuple[int, dict[str, object] | None, str]:
    result = runner.invoke(build_app(), ["recommend", *args])
    doc = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, doc, result.stderr


def rows(doc: dict[str, object] | None) -> list[dict[str, object]]:
    assert doc is not None
    recs = doc["recommendations"]
    assert isinstance(recs, list)
    return recs


def test_seed_003_rate_500(runner: CliRunner) -> None:
    code, doc, err = recommend(runner, "--profiles", str(SEED_003), "--rate", "500", "--json", "--top", "30")
    assert code == 0, err
    recs = rows(doc)
    first = recs[0]
    assert (first["config"], first["instance_type"], first["instance_count"], first["cost_per_hour"]) == (
        "trt-db-ig",
        "ml.g4dn.xlarge",
        10,
        7.364,
    )
    assert first["cost_per_million"] == round(7.364 / (500 * 3600) * 1e6, 4)
    # the article's whole table: every count and every $/h
    assert {
        (r["config"], r["instance_type"]): (r["instance_count"], r["cost_per_hour"]) for r in recs
    } == SEED_003_TABLE


def test_seed_003_max_latency_500(runner: CliRunner) -> None:
    code, doc, err = recommend(
        runner, "--profiles", str(SEED_003), "--rate", "500", "--max-latency-ms", "500", "--json"
    )
    assert code == 0, err
    recs = rows(doc)
    assert (
        recs[0]["config"],
        recs[0]["instance_type"],
        recs[0]["instance_count"],
        recs[0]["cost_per_hour"],
    ) == (
        "trt-db",
        "ml.g4dn.2xlarge",
        23,
        21.62,
    )
    assert all(float(r["predicted_p90_ms"]) <= 500 for r in recs)  # type: ignore[arg-type]
    assert len(recs) == 5


def test_seed_003_table_on_the_terminal(runner: CliRunner) -> None:
    result = runner.invoke(
        build_app(), ["recommend", "--profiles", str(SEED_003), "--rate", "500"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "trt-db-ig" in result.stdout and "7.364" in result.stdout


def test_seed_004_latency_and_cost_per_inference(runner: CliRunner) -> None:
    code, doc, err = recommend(runner, "--profiles", str(SEED_004), "--rate", "300", "--json")
    assert code == 0, err
    by_config = {r["config"]: r for r in rows(doc)}
    # the article's latencies and costs per inference (rounded as it prints them)
    assert by_config["inf1-b1"]["predicted_p90_ms"] == 28.2
    assert by_config["inf2-b1"]["predicted_p90_ms"] == 3.1
    cost = {c: round(float(r["cost_per_inference_at_capacity"]), 7) for c, r in by_config.items()}  # type: ignore[arg-type]
    assert cost == {"inf1-b1": 0.0000018, "inf2-b1": 0.0000007, "inf1-b10": 0.0000008, "inf2-b10": 0.0000005}
    # 300/s: one inf2.xlarge ($0.7582/h) against nine inf1.xlarge at batch 1
    first = rows(doc)[0]
    assert (first["config"], first["instance_count"], first["cost_per_hour"]) == ("inf2-b1", 1, 0.7582)
    assert by_config["inf1-b1"]["instance_count"] == 9
    assert by_config["inf1-b1"]["cost_per_hour"] == 2.052


def test_seed_004_low_rate_prefers_inf1_unless_latency_says_otherwise(runner: CliRunner) -> None:
    code, doc, _ = recommend(runner, "--profiles", str(SEED_004), "--rate", "100", "--json")
    assert code == 0
    assert (rows(doc)[0]["config"], rows(doc)[0]["cost_per_hour"]) == ("inf1-b10", 0.456)
    code, doc, _ = recommend(
        runner, "--profiles", str(SEED_004), "--rate", "100", "--max-latency-ms", "10", "--json"
    )
    assert code == 0
    assert [r["config"] for r in rows(doc)] == ["inf2-b1"]


def test_slo_nobody_meets_exit_2_with_best_reachable(runner: CliRunner) -> None:
    code, doc, err = recommend(
        runner, "--profiles", str(SEED_003), "--rate", "500", "--max-latency-ms", "100", "--json"
    )
    assert code == 2
    assert "no configuration keeps the latency within 100 ms" in err
    assert "trt-db on ml.g4dn.12xlarge at 278 ms" in err
    assert doc is not None and doc["recommendations"] == []
    best = doc["best_reachable"]
    assert isinstance(best, dict) and best["config"] == "trt-db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rows: [", "not valid YAML"),
        ("- 1\n", "must be a mapping"),
        ("version: 1\nmodel: m\nrows: []\n", "rows"),
        (
            "version: 1\nmodel: m\nrows: [{config: a, instance_type: c7i.large, latency_ms: 5}]\n",
            "give one of",
        ),
        (
            "version: 1\nmodel: m\nbogus: 1\nrows: [{config: a, instance_type: c7i.large, invocations_per_s: 1, latency_ms: 5}]\n",
            "bogus",
        ),
        (
            "version: 1\nmodel: m\nrows: [{config: a, instance_type: ml.nowhere, invocations_per_s: 1, latency_ms: 5}]\n",
            "ml.nowhere",
        ),
    ],
)
def test_malformed_profiles_file(runner: CliRunner, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    code, _, err = recommend(runner, "--profiles", str(path), "--rate", "10")
    assert code == 2
    assert message in err


def test_missing_files_and_bad_json(runner: CliRunner, tmp_path: Path) -> None:
    code, _, err = recommend(runner, "--profiles", str(tmp_path / "none.yaml"), "--rate", "10")
    assert code == 2 and "does not exist" in err
    (tmp_path / "p.json").write_text("{")
    code, _, err = recommend(runner, "--profiles", str(tmp_path / "p.json"), "--rate", "10")
    assert code == 2 and "not valid JSON" in err
    (tmp_path / "p.json").write_text('{"schema_version": 9}')
    code, _, err = recommend(runner, "--profiles", str(tmp_path / "p.json"), "--rate", "10")
    assert code == 2 and "schema_version 9" in err and "reads 1 to 2" in err


# ---------------------------------------------------------------------------- measured profiles


def measured_repo(root: Path, machine: Machine | None = None, margin: float = 1.0) -> Path:
    """A one-model repository with a profile.json of two configurations beside version 1."""
    identity(root / "tiny" / "1" / "model.onnx")
    write_config(root / "tiny", {"max_batch_size": 8, "onnxruntime": {"intra_op_threads": 1}})

    def ramp(*points: tuple[int, float, float]) -> list[Step]:
        return [
            Step(
                concurrency=c,
                requests=1000,
                errors=0,
                throughput_per_s=t,
                p50_ms=p / 2,
                p90_ms=p,
                p99_ms=p * 2,
            )
            for c, t, p in points
        ]

    profile = Profile(
        model="tiny",
        version="1",
        model_digest=version_digest(root / "tiny" / "1"),
        created_at="2026-12-05T00:00:00+00:00",
        machine=machine or this_machine(),
        slo=Slo(p90_ms=20, margin=margin),
        search="brute",
        step_duration_s=1,
        elapsed_s=10,
        measurements=[
            Measurement(
                settings=Settings(),
                seq_len=16,
                steps=ramp((1, 100, 5), (2, 150, 12), (4, 160, 30)),
                load_s=0.5,
                memory_bytes=10**8,
                stopped="slo",
            ),
            Measurement(
                settings=Settings(max_batch_size=8, max_queue_delay_us=1000, intra_op_threads=1),
                seq_len=16,
                steps=ramp((1, 90, 6), (4, 300, 15), (8, 400, 25)),
                load_s=0.5,
                memory_bytes=10**8,
                stopped="slo",
            ),
        ],
    )
    (root / "tiny" / "1" / "profile.json").write_text(profile.model_dump_json(indent=2))
    return root


def test_measured_profile_ranked_and_applied(runner: CliRunner, tmp_path: Path) -> None:
    repo = measured_repo(tmp_path)
    code, doc, err = recommend(
        runner, str(repo), "tiny", "--rate", "1000", "--instance-type", "c7i.large", "--json"
    )
    assert code == 0, err
    first = rows(doc)[0]
    assert (first["config"], first["instance_type"], first["instance_count"]) == (
        "b8-d1000-i1-t1",
        "c7i.large",
        4,
    )
    price = load_catalog().by_name()["c7i.large"].usd_per_hour
    assert price is not None and first["cost_per_hour"] == round(4 * price, 6)
    assert first["predicted_p90_ms"] == 15.0  # 250/s per instance: the 300/s step carries it
    assert (first["concurrency"], first["capacity_basis"]) == (4, "window")
    assert "one short window" in err and "modelfleet bench -c 4" in err
    # a tighter SLO recounts capacity from the ramp: 100/s within 10 ms for b1, 90/s for b8
    code, doc, _ = recommend(
        runner,
        str(repo),
        "tiny",
        "--rate",
        "1000",
        "--instance-type",
        "c7i.large",
        "--max-latency-ms",
        "10",
        "--json",
    )
    assert code == 0
    assert rows(doc)[0]["config"] == "b1-d0-i1" and rows(doc)[0]["instance_count"] == 10

    result = runner.invoke(
        build_app(),
        ["recommend", str(repo), "tiny", "--rate", "1000", "--instance-type", "c7i.large", "--apply"],
    )
    assert result.exit_code == 0, result.output
    assert "+  max_queue_delay_us: 1000" in result.stderr
    config = yaml.safe_load((repo / "tiny" / "config.yaml").read_text())
    assert config["dynamic_batching"] == {"enabled": True, "max_batch_size": 8, "max_queue_delay_us": 1000}
    assert config["instances"] == 1 and config["onnxruntime"]["intra_op_threads"] == 1


def test_the_profiles_margin_counts_capacity_below_the_slo(runner: CliRunner, tmp_path: Path) -> None:
    """b8's 400/s step has a P90 of 25 ms: within a 30 ms SLO, not within 0.8 x 30 = 24 ms, where
    its capacity is the 300/s step (15 ms)."""
    repo = measured_repo(tmp_path, margin=0.8)
    args = [str(repo), "tiny", "--rate", "1200", "--instance-type", "c7i.large", "--json"]
    code, doc, err = recommend(runner, *args, "--max-latency-ms", "30")
    assert code == 0, err
    assert (rows(doc)[0]["capacity_per_s"], rows(doc)[0]["instance_count"]) == (300, 4)
    code, doc, _ = recommend(runner, *args, "--max-latency-ms", "30", "--slo-margin", "1")
    assert (rows(doc)[0]["capacity_per_s"], rows(doc)[0]["instance_count"]) == (400, 3)
    # the profile's own SLO (20 ms) x 0.8: b1 within 16 ms at 150/s, b8 at 300/s
    code, doc, _ = recommend(runner, *args)
    assert code == 0 and rows(doc)[0]["capacity_per_s"] == 300
    code, _, err = recommend(runner, *args, "--slo-margin", "0")
    assert code == 2 and "--slo-margin must be in (0, 1]" in err
    code, _, err = recommend(runner, *args, "--max-latency-ms", "5")
    assert code == 2 and "within P90 4 ms (0.8 x 5)" in err


def test_a_version_1_profile_reads_with_the_slo_itself(runner: CliRunner, tmp_path: Path) -> None:
    repo = measured_repo(tmp_path)
    path = repo / "tiny" / "1" / "profile.json"
    doc = json.loads(path.read_text())
    doc["schema_version"] = 1
    del doc["slo"]["margin"]
    for m in doc["measurements"]:
        del m["elapsed_s"], m["confirmed"]
    path.write_text(json.dumps(doc))
    code, out, err = recommend(
        runner, str(repo), "tiny", "--rate", "800", "--instance-type", "c7i.large", "--json"
    )
    assert code == 0, err
    assert rows(out)[0]["capacity_per_s"] == 300  # within 20 ms: the 300/s step at 15 ms


def test_default_instance_type_matches_the_measuring_machine(runner: CliRunner, tmp_path: Path) -> None:
    machine = this_machine().model_copy(update={"nproc": 2})
    repo = measured_repo(tmp_path, machine)
    code, doc, _ = recommend(runner, str(repo), "tiny", "--rate", "100", "--json")
    assert code == 0
    cpu_2 = [t for t in load_catalog().types if t.accelerators is None and t.vcpus == 2 and t.usd_per_hour]
    cheapest = min(cpu_2, key=lambda t: (t.usd_per_hour or 0, t.name))
    assert rows(doc)[0]["instance_type"] == cheapest.name  # the cheapest 2-vCPU CPU type


def test_unknown_model_no_profile_and_unknown_version(runner: CliRunner, tmp_path: Path) -> None:
    repo = measured_repo(tmp_path)
    code, _, err = recommend(runner, str(repo), "nope", "--rate", "10")
    assert code == 2 and "unknown model 'nope'" in err and "tiny" in err
    code, _, err = recommend(runner, str(repo), "tiny", "--rate", "10", "--version", "7")
    assert code == 2 and "no version 7" in err
    (repo / "tiny" / "1" / "profile.json").unlink()
    code, _, err = recommend(runner, str(repo), "tiny", "--rate", "10")
    assert code == 2 and "modelfleet profile" in err


def test_other_machine_warns_and_strict_refuses(runner: CliRunner, tmp_path: Path) -> None:
    machine = this_machine().model_copy(update={"nproc": 96, "cpu_model": "Some Other CPU"})
    repo = measured_repo(tmp_path, machine)
    args = [str(repo), "tiny", "--rate", "100", "--instance-type", "c7i.large"]
    code, _, err = recommend(runner, *args)
    assert code == 0 and "another machine" in err and "Some Other CPU" in err
    code, _, err = recommend(runner, *args, "--strict")
    assert code == 2 and "--strict" in err


def test_other_version_or_changed_files_warn_and_strict_refuses(runner: CliRunner, tmp_path: Path) -> None:
    repo = measured_repo(tmp_path)
    args = [str(repo), "tiny", "--rate", "100", "--instance-type", "c7i.large"]
    identity(repo / "tiny" / "2" / "model.onnx")  # a new version, not profiled
    code, _, err = recommend(runner, *args)
    assert code == 0 and "measured on version 1, but version 2 is served" in err
    code, _, _ = recommend(runner, *args, "--strict")
    assert code == 2
    identity(repo / "tiny" / "1" / "model.onnx", shape=("batch", 4))  # version 1's files changed
    code, _, err = recommend(runner, *args, "--version", "1")
    assert code == 0 and "changed since the profile was measured" in err


def test_cli_argument_errors(runner: CliRunner, tmp_path: Path) -> None:
    app = build_app()
    assert runner.invoke(app, ["recommend", "--profiles", str(SEED_003)]).exit_code == 2  # no --rate
    assert runner.invoke(app, ["recommend", "--rate", "5"]).exit_code == 2  # no source
    assert (
        runner.invoke(app, ["recommend", "--profiles", str(SEED_003), "--rate", "5", "--apply"]).exit_code
        == 2
    )


def test_precision_variants_ranked_together_and_the_winner_applied_to_its_own_model(
    runner: CliRunner, tmp_path: Path
) -> None:
    repo = measured_repo(tmp_path)
    # a variant (e.g. `modelfleet compile --static-int8`) is a model of its own, with its own profile
    identity(repo / "tiny-int8" / "1" / "model.onnx")
    write_config(repo / "tiny-int8", {"max_batch_size": 8})
    doc = json.loads((repo / "tiny" / "1" / "profile.json").read_text())
    doc["model"] = "tiny-int8"
    for m in doc["measurements"]:
        for s in m["steps"]:
            s["throughput_per_s"] *= 2
    (repo / "tiny-int8" / "1" / "profile.json").write_text(json.dumps(doc))
    args = [str(repo), "tiny", "--profiles", str(repo / "tiny-int8" / "1" / "profile.json")]
    args += ["--rate", "1000", "--instance-type", "c7i.large"]
    code, out, err = recommend(runner, *args, "--json")
    assert code == 0, err
    first = rows(out)[0]
    assert (first["config"], first["model"], first["instance_count"]) == (
        "tiny-int8:b8-d1000-i1-t1",
        "tiny-int8",
        2,
    )
    assert {r["model"] for r in rows(out)} == {"tiny", "tiny-int8"}
    result = runner.invoke(build_app(), ["recommend", *args, "--apply"])
    assert result.exit_code == 0, result.output
    assert (
        yaml.safe_load((repo / "tiny-int8" / "config.yaml").read_text())["dynamic_batching"]["max_batch_size"]
        == 8
    )
    assert "dynamic_batching" not in yaml.safe_load((repo / "tiny" / "config.yaml").read_text())


def test_a_final_or_confirmed_capacity_needs_no_note(runner: CliRunner, tmp_path: Path) -> None:
    repo = measured_repo(tmp_path)
    path = repo / "tiny" / "1" / "profile.json"
    args = [str(repo), "tiny", "--rate", "1000", "--instance-type", "c7i.large", "--json"]
    for field, basis in (("confirmed", "confirmed"), ("final", "final")):
        doc = json.loads(path.read_text())
        doc["measurements"][1][field] = [4]
        if field == "final":
            doc["measurements"][1]["final_s"] = 10
        path.write_text(json.dumps(doc))
        code, out, err = recommend(runner, *args)
        assert code == 0, err
        assert rows(out)[0]["capacity_basis"] == basis and "short window" not in err
