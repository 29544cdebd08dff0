"""What a running local cluster is: PLAN_DIR/cluster/state.json, written by `up` once everything
answers, read by `status` and `down`. The folder also holds each server's model list, the nginx
prefix and configuration, and the logs."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from modelfleet.cluster.layout import ClusterError

STATE_FOLDER = "cluster"
STATE_FILE = "state.json"


@dataclass(frozen=True, slots=True)
class ServerState:
    name: str
    instance_type: str
    pid: int
    port: int
    models: int  # planned models (the file lists them; bases they use are served too)
    models_file: str
    memory_budget_bytes: int
    threads: int
    cpus: tuple[int, ...] = ()  # pinned to (`up --pin`); () : not pinned


@dataclass(frozen=True, slots=True)
class ClusterState:
    host: str
    port: int  # the nginx front
    repository: str
    scale: float
    nginx_pid: int
    servers: tuple[ServerState, ...]

    @property
    def pids(self) -> list[int]:
        return [self.nginx_pid, *(s.pid for s in self.servers)]


def state_folder(plan_dir: Path) -> Path:
    return plan_dir.resolve() / STATE_FOLDER


def write_state(plan_dir: Path, state: ClusterState) -> None:
    """Atomically: a reader sees the old file or the new one."""
    path = state_folder(plan_dir) / STATE_FILE
    part = path.with_suffix(".part")
    part.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(part, path)


def read_state(plan_dir: Path) -> ClusterState | None:
    """The cluster's state, or None when none was started (or it was stopped)."""
    path = state_folder(plan_dir) / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        servers = tuple(ServerState(**{**s, "cpus": tuple(s.get("cpus", ()))}) for s in doc.pop("servers"))
        return ClusterState(servers=servers, **doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ClusterError(f"{path} is not a cluster state this version wrote ({exc})") from None


def remove_state(plan_dir: Path) -> None:
    (state_folder(plan_dir) / STATE_FILE).unlink(missing_ok=True)
