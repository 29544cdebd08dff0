"""Client processes for `--processes N`: both ends of the pipe between coordinator and clients.

Each client is `python -m modelfleet.bench.worker` reading msgpack frames on stdin and writing them
on stdout; all clients build their requests first and start together on `Go`. A job with an
open-loop schedule runs the open loop and answers an `OpenShareResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

import msgspec

from modelfleet.bench.client import Share, event_loop_factory
from modelfleet.bench.messages import Go, Ready, ShareJob, read_message, write_message
from modelfleet.bench.openloop import OpenShare
from modelfleet.bench.spec import Protocol

if TYPE_CHECKING:
    from modelfleet.bench.grpcload import GrpcShare

R = TypeVar("R", bound=msgspec.Struct)

EXIT_WAIT_S = 10.0


class ClientProcessError(Exception):
    """A client process died or broke the message protocol."""


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdin, proc.stdout


def _child_env() -> dict[str, str]:
    """This environment, with the directory holding `modelfleet` first on the import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_in_processes(jobs: list[ShareJob], result: type[R]) -> list[R]:
    """Run each job in its own client process, started together, and collect their results
    (`ShareResult` for closed-loop jobs, `OpenShareResult` for open-loop ones)."""
    command = [sys.executable, "-m", "modelfleet.bench.worker"]
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_child_env())
            )
            for _ in jobs
        ]
        try:
            for proc, job in zip(procs, jobs, strict=True):
                write_message(_pipes(proc)[0], job)
            for proc in procs:
                read_message(_pipes(proc)[1], Ready)
            for proc in procs:
                write_message(_pipes(proc)[0], Go())
            results = [read_message(_pipes(proc)[1], result) for proc in procs]
            for proc in procs:
                _pipes(proc)[0].close()
                proc.wait(EXIT_WAIT_S)
        except (EOFError, OSError, subprocess.TimeoutExpired) as exc:
            codes = ", ".join(str(p.poll()) for p in procs)
            raise ClientProcessError(f"a client process failed ({exc}); exit codes: {codes}") from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    return results


def closed_share(job: ShareJob) -> Share | GrpcShare:
    """The closed loop of the job's protocol: HTTP connections, or gRPC calls (grpcio imported then)."""
    if job.workload.target.protocol is Protocol.GRPC:
        from modelfleet.bench.grpcload import GrpcShare

        return GrpcShare(job)
    return Share(job)


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the message pipe
    job = read_message(stdin, ShareJob)
    share: Share | GrpcShare | OpenShare = closed_share(job) if job.open_loop is None else OpenShare(job)
    write_message(stdout, Ready())
    read_message(stdin, Go)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(share.run())
    write_message(stdout, result)


if __name__ == "__main__":
    main()
