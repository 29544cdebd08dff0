"""One harness for end-to-end tests: `modelfleet serve` as a subprocess on a free port, polled until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    """Poll `url` until it answers 200 (a server in another process has no event to wait on); fail
    with the server's log if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server not ready after {timeout_s} s:\n{log.read_text(errors='replace')}")


class ServerProcess:
    def __init__(self, repository: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.grpc_port = free_port()  # each server its own: never the shared default 8001
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log = repository.parent / f"server-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "modelfleet",
            "serve",
            str(repository),
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            *args,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_ready(f"http://{self.url}/v2/health/ready", self.proc, self.log, timeout_s)

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(repo, "--intra-op-threads", "1", "--startup-load", "all")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
