"""`modelfleet cluster up/status/down` as a user runs them: real `modelfleet serve` processes behind
a real nginx, a hand-written plan over a generated repository; bad input leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from modelfleet.cluster.front import NGINX_PATHS
from modelfleet.cluster.procs import children, cmdline
from tests.e2e.conftest import free_port
from tests.models import identity

NGINX = shutil.which("nginx") or next((p for p in NGINX_PATHS if shutil.which(p)), None)
needs_nginx = pytest.mark.skipif(
    NGINX is None,
    reason="nginx is not installed (`make nginx` installs it from the Debian packages when it may)",
)
PLAN = {"server-0": ["m0", "m1"], "server-1": ["m2", "m3"], "server-2": ["m4"]}  # m5: in no server
ROW = [float(i) for i in range(16)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for i in range(6):
        identity(tmp_path / "repo" / f"m{i}" / "1" / "model.onnx")
    return tmp_path / "repo"


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan", list(PLAN.values()))


def write_plan(folder: Path, instances: list[list[str]]) -> Path:
    folder.mkdir(parents=True)
    doc = {
        "instances": [{"type": "c7i.large", "usd_per_hour": 0.1, "models": models} for models in instances]
    }
    (folder / "plan.yaml").write_text(yaml.safe_dump(doc))
    return folder


def cluster(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelfleet", "cluster", *map(str, args)]
    env = {**os.environ, "COLUMNS": "160"}  # the status table unwrapped
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)


def ours(plan_dir: Path) -> list[int]:
    """Processes whose command line names the plan folder: what a cluster of it would have started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            line = cmdline(int(entry.name))
            if line is not None and str(plan_dir) in line and "modelfleet cluster" not in line:
                found.append(int(entry.name))
    return found


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def front(plan_dir: Path, repo: Path) -> Iterator[int]:
    port = free_port()
    done = cluster(
        "up", plan_dir, "--port", port, "--repo", repo, "--scale", "0.1", "--nginx", str(NGINX),
        "--pin", "--server-arg=--max-queue-size=77",
    )  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr
        yield port
    finally:
        cluster("down", plan_dir)


@needs_nginx
def test_up_routes_every_model_to_its_server_and_down_leaves_nothing(
    plan_dir: Path, repo: Path, front: int
) -> None:
    status = json.loads(cluster("status", plan_dir, "--json").stdout)
    servers = {s["name"]: s for s in status["servers"]}
    assert sorted(servers) == sorted(PLAN) and status["front"]["running"]
    assert all(s["running"] and s["ready"] for s in servers.values())
    assert {name: s["models"] for name, s in servers.items()} == {n: len(m) for n, m in PLAN.items()}
    assert servers["server-0"]["memory_budget_bytes"] == int(4 * 2**30 * 0.1)  # c7i.large x --scale
    allowed = sorted(os.sched_getaffinity(0))
    expected = [(allowed[k % len(allowed)],) for k in range(3)]  # one thread each, in turn
    for k, name in enumerate(sorted(servers)):  # --pin: each server runs where the status says
        assert servers[name]["cpus"] == list(expected[k])
        assert os.sched_getaffinity(servers[name]["pid"]) == set(expected[k])
        assert "--max-queue-size=77" in (cmdline(servers[name]["pid"]) or "")
    assert os.sched_getaffinity(0) == set(allowed)  # `up` gave its own CPUs back
    body = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{front}", trust_env=False) as client:
        for name, models in PLAN.items():
            for model in models:
                r = client.post(f"/v2/models/{model}/infer", json=body)
                assert r.status_code == 200, r.text
                assert r.json()["outputs"][0]["data"] == ROW
                assert r.headers["x-modelfleet-group"] == f"mf-{name}"
        r = client.post("/v2/models/m5/infer", json=body)
        assert r.status_code == 404 and "not served by this fleet" in r.json()["error"]
    for name, models in PLAN.items():  # each server answered its own models, and serves no other
        base = f"http://127.0.0.1:{servers[name]['port']}"
        stats = httpx.get(f"{base}/v2/models/stats", trust_env=False).json()["model_stats"]
        assert {s["name"] for s in stats if s["inference_stats"]["success"]["count"]} == set(models)
        other = next(m for n, ms in PLAN.items() if n != name for m in ms)
        assert httpx.get(f"{base}/v2/models/{other}", trust_env=False).status_code == 404
    table = cluster("status", plan_dir)
    assert table.returncode == 0 and "server-2" in table.stdout and "ready" in table.stdout

    again = cluster("up", plan_dir, "--port", free_port(), "--repo", repo, "--nginx", str(NGINX))
    assert again.returncode == 2 and "is already running" in again.stderr

    pids = ours(plan_dir) + children(status["front"]["pid"])
    assert len(pids) >= 5  # three servers, nginx's master and its workers
    done = cluster("down", plan_dir)
    assert done.returncode == 0 and "stopped 4 process(es)" in done.stderr, done.stderr
    assert ours(plan_dir) == [] and all(cmdline(pid) is None for pid in pids)
    assert bindable(front)
    assert cluster("status", plan_dir, "--json").stdout.strip() == "null"
    assert "no cluster was running" in cluster("down", plan_dir).stderr


@needs_nginx
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown models", "1 planned model(s) are not in it (nosuch)"),
        ("port in use", "is in use: choose another --port"),
        (
            "nginx missing",
            "does not exist or is not executable; install it from your distribution's packages",
        ),
        ("no port", "cluster up needs --port"),
        ("no plan", "modelfleet plan FLEET --out"),
    ],
)
def test_bad_input_is_refused_with_nothing_started(
    tmp_path: Path, repo: Path, case: str, message: str
) -> None:
    plan_dir = write_plan(tmp_path / "p", [["m0"], ["m1", "nosuch"] if case == "unknown models" else ["m1"]])
    port = free_port()
    args: list[str | Path] = ["up", plan_dir, "--port", port, "--repo", repo, "--scale", "0.1"]
    args += ["--nginx", str(tmp_path / "no" / "nginx") if case == "nginx missing" else str(NGINX)]
    if case == "no port":
        args.remove("--port")
        args.remove(port)
    if case == "no plan":
        (plan_dir / "plan.yaml").unlink()
    with socket.socket() as busy:
        if case == "port in use":
            busy.bind(("127.0.0.1", port))
            busy.listen()
        done = cluster(*args)
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert ours(plan_dir) == []
    assert not (plan_dir / "cluster" / "state.json").exists()


@needs_nginx
def test_a_failed_start_stops_what_it_started(tmp_path: Path, plan_dir: Path, repo: Path) -> None:
    """nginx checks the configuration, then fails to start (as when another process takes the port
    between the check and the start): the servers already running are stopped again."""
    failing = tmp_path / "nginx"
    failing.write_text(
        f'#!/bin/sh\ncase " $* " in *" -t "*) exec {NGINX} "$@";; esac\necho "bind failed" >&2\nexit 1\n'
    )
    failing.chmod(0o755)
    done = cluster(
        "up", plan_dir, "--port", free_port(), "--repo", repo, "--scale", "0.1", "--nginx", failing
    )
    assert done.returncode == 2, done.stderr
    assert "nginx exited with status 1 while starting" in done.stderr and "bind failed" in done.stderr
    assert "started server-2" in done.stderr  # the servers were up
    assert ours(plan_dir) == []
    assert not (plan_dir / "cluster" / "state.json").exists()
