"""The processes a local cluster starts, and stopping them again by pid, whoever their parent is now.

A pid is signalled only while its command line still names the cluster's state folder (a pid the
system has since given to another program is left alone), and the processes it had started (nginx's
workers, a server's worker processes) are found before it is signalled, so that none outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from modelfleet.cluster.layout import ClusterError

POLL_S = 0.05  # between looks at a starting or stopping process
LOG_TAIL_BYTES = 2000
KILL_WAIT_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer


def port_free(host: str, port: int) -> bool:
    """Whether a listening socket could bind host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports free now (the system's choice; held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None, cpus: Sequence[int] = ()) -> int:
    """Start a process in a session of its own (it outlives `cluster up`, and Ctrl-C there does not
    reach it), its output appended to `log`; its pid. No Popen object: nothing here waits for it
    but `stop` (and `exited`), which reap it when it is this process's child. `cpus`: run it, and
    every thread it starts, on these CPUs only (the calling thread's affinity is what a spawned
    process inherits, so it is set for the spawn and put back)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    mine = os.sched_getaffinity(0)
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
        ]
        return os.posix_spawnp(
            argv[0], list(argv), dict(os.environ if env is None else env), file_actions=actions, setsid=True
        )
    except OSError as exc:
        raise ClusterError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        if cpus:
            os.sched_setaffinity(0, mine)
        os.close(fd)


def exited(pid: int) -> int | None:
    """The exit status of a child that has ended (reaped here), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if cmdline(pid) is not None else -1
    return os.waitstatus_to_exitcode(status) if done == pid else None


def wait_ready(pid: int, url: str, what: str, log: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200; ClusterError when the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            status = exited(pid)
            if status is not None:
                raise ClusterError(f"{what} exited with status {status} while starting:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} was not ready after {timeout_s:g} s:\n{tail(log)}")
            time.sleep(POLL_S)


def tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return "(no log)"


def cmdline(pid: int) -> str | None:
    """The process's command line, its arguments joined by spaces; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] in "ZX":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, mark: str) -> bool:
    """Whether `pid` runs and is ours: its command line names `mark` (the state folder)."""
    line = cmdline(pid)
    return line is not None and mark in line


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (nginx workers, a server's worker processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def stop(pids: Sequence[int], mark: str, timeout_s: float) -> list[int]:
    """SIGTERM to each pid that is still ours, SIGKILL to whatever of them and their children is
    left after `timeout_s`; the pids that were signalled."""
    ours = [pid for pid in pids if alive(pid, mark)]
    family = ours + [child for pid in ours for child in children(pid)]
    for pid in ours:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_running(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for pid in family:
        if _running(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while any(_running(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return ours


def _running(pid: int) -> bool:
    """Not yet exited (a child of this process is reaped here, so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return cmdline(pid) is not None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
