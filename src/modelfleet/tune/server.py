"""The `modelfleet serve` process a configuration is measured on: a scratch copy of the model's
repository (weights linked, not copied), the configuration written into its config.yaml, the server
started on a free port, its readiness, cold start and PSS read, and the process stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from modelfleet.bench.run import first_answer_s
from modelfleet.bench.workload import SetupError
from modelfleet.repository.config import CONFIG_FILENAME
from modelfleet.repository.weights import BLOBS_DIR
from modelfleet.tune.apply import with_settings
from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.schema import Settings

READY_TIMEOUT_S = 120.0
STOP_WAIT_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def scratch_repository(repo: Path, model: str, version: str, root: Path) -> Path:
    """REPO/MODEL with only `version`, and the blob store, hard-linked (copied across devices) under root."""
    source = repo / model
    target = root / "repo" / model
    target.mkdir(parents=True)
    if (source / CONFIG_FILENAME).is_file():
        shutil.copy2(source / CONFIG_FILENAME, target / CONFIG_FILENAME)
    shutil.copytree(source / version, target / version, copy_function=_link_or_copy)
    if (repo / BLOBS_DIR).is_dir():
        shutil.copytree(repo / BLOBS_DIR, root / "repo" / BLOBS_DIR, copy_function=_link_or_copy)
    return root / "repo"


def pss_bytes(pid: int) -> int | None:
    """PSS of a process and its children (RSS where smaps_rollup is not readable)."""
    total, found = 0, False
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        found = True
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total if found else None


class Server:
    """`modelfleet serve` on a scratch repository, in its own session (Ctrl-C reaches only us)."""

    def __init__(self, repository: Path, model: str, log: Path) -> None:
        self.model = model
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "modelfleet", "serve", str(repository), "--host", "127.0.0.1"]
        # nothing loaded at start: the first request's wait is the model's cold start, measured apart
        command += ["--port", str(self.port), "--grpc-port", "0", "--startup-load", "none"]
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> float:
        """Seconds from the process start to the server answering ready (the model not loaded yet)."""
        url = f"{self.url}/v2/health/ready"
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TuneInputError(f"the server exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TuneInputError(f"the server was not ready after {READY_TIMEOUT_S:g} s: {self.tail()}")

    def cold_start(self, seq_len: int) -> float:
        """Seconds the model's first user waits (it is loaded on that request)."""
        try:
            return first_answer_s(self.url, self.model, seq_len, READY_TIMEOUT_S)
        except (SetupError, ValueError) as exc:
            raise TuneInputError(
                f"{self.model} did not answer its first request: {exc}; {self.tail()}"
            ) from None

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def serving(repository: Path, model: str, settings: Settings, workdir: Path) -> Iterator[Server]:
    config = repository / model / CONFIG_FILENAME
    old = config.read_text(encoding="utf-8") if config.is_file() else ""
    config.write_text(with_settings(old, settings, model), encoding="utf-8")
    server = Server(repository, model, workdir / f"server-{settings.name}.log")
    try:
        yield server
    finally:
        server.stop()
        config.write_text(old, encoding="utf-8")
