"""The cluster's nginx front: the Kubernetes router's configuration (deploy/router.py, the same
`render_nginx`) pointed at the local servers, run as a foreground nginx with its own prefix in the
state folder (its pid file, logs and temporary files stay there; nothing in /etc is used)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from modelfleet.cluster import procs
from modelfleet.cluster.layout import ClusterError, ServerSpec

NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
PREFIX = "nginx"  # in the state folder
CONF = "nginx.conf"
START_TIMEOUT_S = 15.0
INSTALL_HINT = (
    "install it from your distribution's packages (Debian/Ubuntu: `apt-get install -y nginx`, "
    "which `make nginx` runs when it may) or pass --nginx PATH"
)


def find_nginx(given: str | None) -> str:
    """The nginx binary: `given`, else nginx on PATH, else the usual places; ClusterError if none."""
    if given is not None:
        found = shutil.which(given)
        if found is None:
            raise ClusterError(f"nginx binary {given} does not exist or is not executable; {INSTALL_HINT}")
        return found
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if shutil.which(p)), None)
    if found is None:
        raise ClusterError(f"nginx is not installed; {INSTALL_HINT}")
    return found


def render(servers: Sequence[ServerSpec], ports: Sequence[int], host: str, port: int) -> str:
    """The router's nginx.conf for these servers: each model to its server's upstream."""
    try:
        from modelfleet.deploy.router import render_nginx
    except ImportError as exc:
        raise ClusterError(
            f"the router's renderer (modelfleet.deploy.router) cannot be imported: {exc}"
        ) from None
    routes = {model: server.name for server in servers for model in server.models}
    upstreams = {server.name: [f"{host}:{p}"] for server, p in zip(servers, ports, strict=True)}
    return render_nginx(routes, upstreams, listen=f"{host}:{port}", grpc_listen=None)


def write_config(
    folder: Path, servers: Sequence[ServerSpec], ports: Sequence[int], host: str, port: int
) -> Path:
    """nginx's prefix folder with the rendered configuration in it; the configuration's path."""
    prefix = folder / PREFIX
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / CONF
    conf.write_text(local(render(servers, ports, host, port)), encoding="utf-8")
    return conf


def local(text: str) -> str:
    """The router's configuration run by hand here: in the foreground, its pid file and error log in
    the prefix (relative paths are read from it)."""
    head = "daemon off;\npid logs/nginx.pid;\nerror_log logs/error.log warn;\n"
    return head + text


def argv(nginx: str, folder: Path, conf: Path) -> list[str]:
    return [nginx, "-p", f"{folder / PREFIX}/", "-c", str(conf)]


def check_config(nginx: str, folder: Path, conf: Path) -> None:
    """`nginx -t`: ClusterError with nginx's own words when it refuses the configuration."""
    try:
        done = subprocess.run(
            [*argv(nginx, folder, conf), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"cannot run {nginx} -t: {exc}") from None
    if done.returncode != 0:
        raise ClusterError(f"nginx refuses the rendered configuration {conf}:\n{done.stderr.strip()}")


def start(nginx: str, folder: Path, conf: Path, host: str, port: int) -> int:
    """Start nginx and wait until the front accepts connections; its pid."""
    log = folder / PREFIX / "logs" / "stderr.log"
    pid = procs.spawn(argv(nginx, folder, conf), log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status = procs.exited(pid)
        if status is not None:
            raise ClusterError(f"nginx exited with status {status} while starting:\n{procs.tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return pid
        except OSError:
            pass
        if time.monotonic() > deadline:
            procs.stop([pid], str(folder), 1.0)
            raise ClusterError(f"nginx did not listen on {host}:{port} within {START_TIMEOUT_S:g} s")
        time.sleep(procs.POLL_S)
