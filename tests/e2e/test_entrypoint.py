"""The image's entrypoint (docker/entrypoint.sh) run by /bin/sh as the container would run it, without
a container engine: which `modelfleet` command and environment each argument form leads to (a fake
`modelfleet` on PATH records them), and SageMaker's `serve` with the real server and health check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port, wait_ready

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"
FAKE = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD/argv"
env > "$RECORD/env"
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "modelfleet").write_text(FAKE)
    (bin_dir / "modelfleet").chmod(0o755)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def run(fake: Path, *args: str, **env: str) -> tuple[list[str], dict[str, str], str]:
    """The entrypoint with a fake modelfleet: its argv, environment and the health URL it noted."""
    environment = {
        "PATH": f"{fake / 'bin'}:/usr/bin:/bin",
        "RECORD": str(fake),
        "TMPDIR": str(fake / "tmp"),
    } | env
    done = subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    argv = (fake / "argv").read_text().splitlines()
    seen = dict(line.split("=", 1) for line in (fake / "env").read_text().splitlines() if "=" in line)
    health = fake / "tmp" / "modelfleet-health-url"
    return argv, seen, health.read_text().strip() if health.exists() else ""


def test_no_arguments_serve_the_repository_over_v2(fake: Path) -> None:
    argv, env, health = run(fake)
    assert argv == ["serve", "/models"]
    assert "MODELFLEET_SAGEMAKER" not in env
    assert health == "http://127.0.0.1:8000/v2/health/ready"


def test_options_are_passed_to_serve_with_the_configured_repository(fake: Path) -> None:
    argv, _, health = run(
        fake, "--models", "@/etc/modelfleet/models/models.txt", "-p", "9000", MODELFLEET_REPOSITORY="s3://b/p"
    )
    assert argv == ["serve", "s3://b/p", "--models", "@/etc/modelfleet/models/models.txt", "-p", "9000"]
    assert health == "http://127.0.0.1:9000/v2/health/ready"


def test_the_http_port_setting_moves_the_health_check(fake: Path) -> None:
    assert run(fake, MODELFLEET_HTTP_PORT="8500")[2] == "http://127.0.0.1:8500/v2/health/ready"


def test_sagemaker_serve_runs_single_model_on_8080_without_grpc(fake: Path) -> None:
    argv, env, health = run(fake, "serve")
    assert argv == ["serve", "/opt/ml/model"]
    assert env["MODELFLEET_SAGEMAKER"] == "true"
    assert env["MODELFLEET_GRPC_PORT"] == "0"
    assert health == "http://127.0.0.1:8080/v2/health/ready"


def test_sagemaker_bind_to_port_and_explicit_options(fake: Path) -> None:
    assert run(fake, "serve", SAGEMAKER_BIND_TO_PORT="9090")[2].startswith("http://127.0.0.1:9090/")
    argv, env, health = run(fake, "serve", "--port=7000", MODELFLEET_GRPC_PORT="8001")
    assert argv == ["serve", "/opt/ml/model", "--port=7000"]
    assert env["MODELFLEET_GRPC_PORT"] == "8001"  # given: kept
    assert health.startswith("http://127.0.0.1:7000/")


@pytest.mark.parametrize("flag", ["true", "TRUE", "1"])
def test_sagemaker_multi_model_serves_an_empty_staging_repository(fake: Path, flag: str) -> None:
    argv, _, _ = run(fake, "serve", SAGEMAKER_MULTI_MODEL=flag)
    staging = fake / "tmp" / "modelfleet" / "repository"
    assert argv == ["serve", str(staging)]
    assert staging.is_dir()
    assert list(staging.iterdir()) == []


def test_any_other_command_runs_as_given(fake: Path) -> None:
    done = subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), "printf", "%s|", "a b", "c"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == "a b|c|"


def healthcheck(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TMPDIR": str(tmp)} | env
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), "healthcheck"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    done = healthcheck(tmp_path, MODELFLEET_HTTP_PORT=str(free_port()))
    assert done.returncode == 1
    assert "not ready" in done.stderr


def test_sagemaker_serve_with_the_real_server_and_health_check(repo: Path, tmp_path: Path) -> None:
    """`IMAGE serve` as SageMaker runs it: SageMaker's port, /ping, and the image's health check."""
    port = free_port()
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "MODELFLEET_REPOSITORY": str(repo),
        "MODELFLEET_HOST": "127.0.0.1",
        "MODELFLEET_INTRA_OP_THREADS": "1",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/sh", str(ENTRYPOINT), "serve"], env=environment, stdout=out, stderr=out
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ping", proc, log)
        # the health check reads the URL the entrypoint noted: SageMaker's port, not 8000
        done = healthcheck(tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        proc.wait(30)
    assert healthcheck(tmp_path).returncode == 1
