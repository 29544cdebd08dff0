"""One server group of `modelfleet deploy` run for real: the image's entrypoint with the environment
of the group's Deployment and the model list of its ConfigMap (paths moved to a temporary folder, a
folder repository in place of s3://) serves that group's models and no others."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from modelfleet.config import ServerSettings, parse_budget
from modelfleet.deploy.groups import MODELS_FILE, GroupOptions
from modelfleet.deploy.routing import RouterOptions
from modelfleet.deploy.write import Rendered, load_all, render
from modelfleet.planner.catalog import load_catalog
from tests.e2e.conftest import free_port, wait_ready
from tests.unit.test_deploy_plan import write_plan

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"


def _rendered(tmp_path: Path) -> Rendered:
    plan = write_plan(
        tmp_path / "plan",
        [
            {"type": "c7i.large", "models": ["identity", "add_sub"]},
            {"type": "c7i.large", "models": ["versioned"]},
        ],
    )
    options = GroupOptions(image="modelfleet:test", repository="s3://models/repo", namespace="fleet")
    return render(plan, load_catalog(), options, RouterOptions(namespace="fleet"))


def _group(rendered: Rendered, name: str) -> tuple[dict[str, str], str]:
    docs: list[dict[str, Any]] = load_all(rendered.files[f"groups/{name}.yaml"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return env, config["data"][MODELS_FILE]


def test_every_variable_of_the_deployment_is_a_server_setting(tmp_path: Path) -> None:
    env, models = _group(_rendered(tmp_path), "c7i-large-000")
    fields = ServerSettings.model_fields
    for name in env:
        path = name.removeprefix("MODELFLEET_").lower().split("__")
        assert path[0] in fields, name
    assert env["MODELFLEET_MODELS"] == "@/etc/modelfleet/models/models.txt"
    (tmp_path / MODELS_FILE).write_text(models)  # where the ConfigMap is mounted, here
    values = {k.removeprefix("MODELFLEET_").lower(): v for k, v in env.items() if "__" not in k}
    parsed = ServerSettings(**values | {"models": f"@{tmp_path / MODELS_FILE}"})
    assert parsed.repository == "s3://models/repo"
    assert parsed.port == 8000 and parsed.grpc_port == 8001
    assert parsed.shutdown_timeout_s == 25
    assert parse_budget(parsed.memory_budget) < 4 << 30  # a c7i.large has 4 GiB


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, log)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_group_serves_its_models_only(repo: Path, tmp_path: Path) -> None:
    env, models = _group(_rendered(tmp_path), "c7i-large-000")
    (tmp_path / MODELS_FILE).write_text(models)
    port = free_port()
    env |= {
        "MODELFLEET_REPOSITORY": str(
            repo
        ),  # a folder in place of s3:// (tests/integration/test_objectstore.py)
        "MODELFLEET_MODELS": f"@{tmp_path / MODELS_FILE}",
        "MODELFLEET_S3__CACHE_DIR": str(tmp_path / "cache"),
        "MODELFLEET_HOST": "127.0.0.1",
        "MODELFLEET_HTTP_PORT": str(port),
        "MODELFLEET_GRPC_PORT": "0",
        "MODELFLEET_INTRA_OP_THREADS": "1",
    }
    environment = {
        **os.environ,
        **env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["/bin/sh", str(ENTRYPOINT)], env=environment, stdout=out, stderr=out)
    try:
        _wait_ready(port, proc, log)
        base = f"http://127.0.0.1:{port}/v2/models"
        assert _status(f"{base}/identity") == 200
        assert _status(f"{base}/add_sub") == 200
        assert _status(f"{base}/versioned") == 404  # another group's model
        assert _status(f"{base}/auto") == 404  # in the repository, in no group
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
