"""`cluster up`, `down` and `status`: start the plan's servers and the nginx front, stop them by pid,
and say how they are.

`up` checks everything it can before it starts anything (the plan against the repository, the
catalogue, the port, nginx and its configuration), and stops what it started when a later step
fails, so a failed `up` leaves no process behind.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelfleet.cluster import front, procs
from modelfleet.cluster.layout import ClusterError, ServerSpec, check_models, layout, read_plan
from modelfleet.cluster.state import (
    ClusterState,
    ServerState,
    read_state,
    remove_state,
    state_folder,
    write_state,
)

SERVER_READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0  # above the servers' 25 s shutdown deadline: SIGKILL only for a stuck one


@dataclass(frozen=True, slots=True)
class UpOptions:
    port: int
    repository: Path
    scale: float | None = None
    catalog: Path | None = None
    host: str = "127.0.0.1"
    nginx: str | None = None  # the nginx binary; None: found on PATH or in /usr/sbin
    pin: bool = False  # each server on CPUs of its own (layout.pin_cpus)
    server_args: tuple[str, ...] = ()  # more `modelfleet serve` options, for every server
    ready_timeout_s: float = SERVER_READY_TIMEOUT_S


def up(plan_dir: Path, options: UpOptions, say: Callable[[str], None] = lambda _: None) -> ClusterState:
    """Start the cluster; ClusterError (nothing left running) when it cannot."""
    folder = state_folder(plan_dir)
    running = read_state(plan_dir)
    if running is not None:
        if any(procs.alive(pid, str(folder)) for pid in running.pids):
            raise ClusterError(
                f"a cluster of {plan_dir} is already running (front on port {running.port}): "
                f"`modelfleet cluster down {plan_dir}` first"
            )
        remove_state(plan_dir)  # left by a cluster whose processes are gone
    servers, scale = _servers(plan_dir, options)
    if not procs.port_free(options.host, options.port):
        raise ClusterError(f"port {options.port} on {options.host} is in use: choose another --port")
    nginx = front.find_nginx(options.nginx)
    folder.mkdir(parents=True, exist_ok=True)
    ports = procs.free_ports(options.host, len(servers))
    conf = front.write_config(folder, servers, ports, options.host, options.port)
    front.check_config(nginx, folder, conf)
    started: list[int] = []
    try:
        states = _start_servers(folder, servers, ports, options, started, say)
        say(f"starting nginx on {options.host}:{options.port}")
        nginx_pid = front.start(nginx, folder, conf, options.host, options.port)
        started.append(nginx_pid)
        state = ClusterState(
            options.host, options.port, str(options.repository), scale, nginx_pid, tuple(states)
        )
        write_state(plan_dir, state)
    except BaseException:
        procs.stop(started, str(folder), STOP_TIMEOUT_S)
        raise
    return state


def _servers(plan_dir: Path, options: UpOptions) -> tuple[list[ServerSpec], float]:
    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.errors import PlanInputError
    from modelfleet.repository.open import open_repository

    planned = read_plan(plan_dir)
    if not options.repository.is_dir():
        raise ClusterError(f"repository {options.repository} is not a folder")
    check_models(
        planned, set(open_repository(str(options.repository)).list_models()), str(options.repository)
    )
    try:
        catalog = load_catalog(options.catalog)
    except PlanInputError as exc:
        raise ClusterError(str(exc)) from None
    types = {t.name: {"memory_bytes": t.memory_bytes, "vcpus": t.vcpus} for t in catalog.types}
    return layout(planned, types, options.scale, options.pin)


def _start_servers(
    folder: Path,
    servers: list[ServerSpec],
    ports: list[int],
    options: UpOptions,
    started: list[int],
    say: Callable[[str], None],
) -> list[ServerState]:
    """Every server started at once (loading overlaps), then each waited for."""
    states = []
    for server, port in zip(servers, ports, strict=True):
        models_file = folder / f"{server.name}.models"
        models_file.write_text("".join(f"{m}\n" for m in server.models), encoding="utf-8")
        argv = [
            sys.executable, "-m", "modelfleet", "serve", str(options.repository.resolve()),
            "--host", options.host, "--port", str(port), "--grpc-port", "0",
            "--models", f"@{models_file}", "--memory-budget", str(server.memory_budget_bytes),
            "--intra-op-threads", str(server.threads), *options.server_args,
        ]  # fmt: skip
        log = folder / f"{server.name}.log"
        started.append(procs.spawn(argv, log, cpus=server.cpus))
        states.append(
            ServerState(
                server.name,
                server.instance_type,
                started[-1],
                port,
                len(server.models),
                str(models_file),
                server.memory_budget_bytes,
                server.threads,
                server.cpus,
            )
        )
        pinned = f", CPUs {','.join(map(str, server.cpus))}" if server.cpus else ""
        say(
            f"started {server.name} ({server.instance_type}, {len(server.models)} models{pinned}) on port {port}"
        )
    for state in states:
        url = f"http://{options.host}:{state.port}/v2/health/ready"
        procs.wait_ready(state.pid, url, state.name, folder / f"{state.name}.log", options.ready_timeout_s)
    return states


def down(plan_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop every process the cluster started (SIGTERM, SIGKILL after `timeout_s`); the pids that
    were still running. No cluster: nothing to do."""
    state = read_state(plan_dir)
    if state is None:
        return []
    stopped = procs.stop(state.pids, str(state_folder(plan_dir)), timeout_s)
    remove_state(plan_dir)
    return stopped


def status(plan_dir: Path) -> dict[str, Any] | None:
    """Each server with its pid, port, models and health, and the front; None: no cluster."""
    state = read_state(plan_dir)
    if state is None:
        return None
    mark = str(state_folder(plan_dir))
    rows = []
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        for server in state.servers:
            running = procs.alive(server.pid, mark)
            base = f"http://{state.host}:{server.port}"
            rows.append(
                {
                    "name": server.name,
                    "instance_type": server.instance_type,
                    "pid": server.pid,
                    "port": server.port,
                    "running": running,
                    "ready": running and _ready(client, base),
                    "models": server.models,
                    "loaded": _loaded(client, base) if running else None,
                    "memory_budget_bytes": server.memory_budget_bytes,
                    "threads": server.threads,
                    "cpus": list(server.cpus),
                }
            )
        front_running = procs.alive(state.nginx_pid, mark)
    return {
        "front": {
            "url": f"http://{state.host}:{state.port}",
            "pid": state.nginx_pid,
            "running": front_running,
        },
        "repository": state.repository,
        "scale": state.scale,
        "servers": rows,
    }


def _ready(client: httpx.Client, base: str) -> bool:
    try:
        return client.get(f"{base}/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _loaded(client: httpx.Client, base: str) -> int | None:
    """Models resident on the server now (their versions counted once)."""
    try:
        r = client.post(f"{base}/v2/repository/index", json={"ready": True})
    except httpx.HTTPError:
        return None
    return len({entry["name"] for entry in r.json()}) if r.status_code == 200 else None
