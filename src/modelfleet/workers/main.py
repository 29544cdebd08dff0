"""Worker process entry: `python -m modelfleet.workers.main FD` (started by the supervisor only)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

from modelfleet.workers import messages as m

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the front died before prctl took effect
        sys.exit(1)


def _read_start(sock: socket.socket) -> m.Start:
    def exactly(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = sock.recv(left)
            if not chunk:
                sys.exit(1)  # the front went away before starting us
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    header_bytes, buffer_bytes = m.frame_lengths(exactly(m.PREFIX.size))
    message, _ = m.decode(exactly(header_bytes + buffer_bytes), header_bytes)
    if not isinstance(message, m.Start):
        raise m.FrameError(f"expected a Start message first, got {type(message).__name__}")
    return message


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    start = _read_start(sock)
    if start.cores and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, start.cores)

    import orjson

    from modelfleet.server.logs import configure_logging
    from modelfleet.workers.worker import serve

    settings = orjson.loads(start.settings_json)
    configure_logging(settings.get("log_level", "info"), settings.get("log_format", "text"))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(start, sock))
    else:
        uvloop.run(serve(start, sock))


if __name__ == "__main__":
    main()
