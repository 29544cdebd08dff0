"""`modelfleet deploy` through its command line (typer's runner, in process): what it writes, and bad
input (a plan that does not parse, an unknown instance type, models the repository lacks, a bad
option) answered with a message, exit 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.deploy.write import MARKER
from tests.models import identity
from tests.unit.test_deploy_plan import write_plan

INSTANCES: list[dict[str, object]] = [
    {"type": "inf1.xlarge", "models": ["a", "b"]},
    {"type": "c7i.large", "models": ["c"]},
]


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan", INSTANCES)


def deploy(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["deploy", *args])
    return result.exit_code, result.output


def test_writes_the_manifests_and_says_how_to_apply_them(plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = deploy(str(plan), "--out", str(out), "--repository", "s3://b/m", "--namespace", "ml")
    assert code == 0, output
    assert f"kubectl apply -k {out}" in output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(
        [
            MARKER,
            "gateway/grpcroutes.yaml",
            "gateway/httproutes.yaml",
            "groups/c7i-large-000.yaml",
            "groups/inf1-xlarge-000.yaml",
            "kserve/runtime.yaml",
            "kustomization.yaml",
            "namespace.yaml",
            "nginx.conf",
            "router.yaml",
        ]
    )
    namespaces = {
        d["metadata"].get("namespace") for d in yaml.safe_load_all((out / "router.yaml").read_text())
    }
    assert namespaces == {"ml"}


def test_a_second_run_replaces_its_own_folder(plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert deploy(str(plan), "--out", str(out), "--repository", "s3://b/m")[0] == 0
    write_plan(plan, [{"type": "c7i.large", "models": ["a", "b", "c"]}])
    assert deploy(str(plan), "--out", str(out), "--repository", "s3://b/m")[0] == 0
    assert sorted(p.name for p in (out / "groups").iterdir()) == ["c7i-large-000.yaml"]


def test_the_planned_models_are_checked_against_a_repository(plan: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        identity(repo / name / "1" / "model.onnx")
    out = tmp_path / "out"
    code, output = deploy(str(plan), "--out", str(out), "--repository", "s3://b/m", "--repo", str(repo))
    assert code == 0, output


def _refused(plan: Path, tmp_path: Path, *extra: str, repository: str = "s3://b/m") -> str:
    out = tmp_path / "refused"
    code, output = deploy(str(plan), "--out", str(out), "--repository", repository, *extra)
    assert code == 2, output
    assert not out.exists()
    return output


def test_models_missing_from_the_repository(plan: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    identity(repo / "a" / "1" / "model.onnx")
    output = _refused(plan, tmp_path, "--repo", str(repo))
    assert f"2 model(s) that repository {repo} does not have: b, c" in output


def test_a_plan_that_does_not_parse(tmp_path: Path) -> None:
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "plan.yaml").write_text("instances:\n- type: inf1.xlarge\n  models: nope\n")
    output = _refused(plan, tmp_path)
    assert "plan.yaml:3: instances.0.models" in output


def test_an_instance_type_the_catalogue_does_not_have(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan", [{"type": "z1.mega", "models": ["a"]}])
    assert "catalogue does not have: z1.mega" in _refused(plan, tmp_path)


@pytest.mark.parametrize(
    ("extra", "repository", "message"),
    [
        ((), "/data/models", "give s3://bucket/prefix"),
        (("--namespace", "Prod_1"), "s3://b/m", "--namespace 'Prod_1' is not a DNS label"),
        (("--image", "bad image"), "s3://b/m", "--image 'bad image' is not an image reference"),
        (("--min-replicas", "3", "--max-replicas", "2"), "s3://b/m", "--max-replicas (2) is below"),
        (("--repo", "/no/such/folder"), "s3://b/m", "--repo /no/such/folder: no such folder"),
    ],
)
def test_bad_options(
    plan: Path, tmp_path: Path, extra: tuple[str, ...], repository: str, message: str
) -> None:
    assert message in _refused(plan, tmp_path, *extra, repository=repository)


def test_a_folder_it_did_not_write_is_left_alone(plan: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, output = deploy(str(plan), "--out", str(out), "--repository", "s3://b/m")
    assert code == 2
    assert "not written by modelfleet deploy" in output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
