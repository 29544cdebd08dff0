"""Issue 16's HTTP/2 abuse targets, against server/h2grpc.py in a real server process on 127.0.0.1.

A client that never reads sends a flood of frames (PING, SETTINGS, HEADERS + RST_STREAM, empty
CONTINUATION) as fast as the socket takes them; the script reports how many the server took in
before it stopped reading or closed, whether it answered GOAWAY (and its code), and the server's
memory growth (peak RSS over the RSS before the flood). Target: memory +< 64 MiB or the connection
closed with GOAWAY. The server is a bare `H2Server` with one echo method, in its own process (uvloop by
default, as `modelfleet serve` runs; `--loop asyncio`), so that its memory is its own.

`--big-answer` measures instead, in this process, the event-loop time one connection spends sending
one 16 MiB answer (16 KiB frames, a client window that lets it all go) and receiving one 16 MiB
request in 64 KiB reads: the cost of the buffers. `--module FILE` runs another version of the
module (e.g. `git show HEAD~3:src/modelfleet/server/h2grpc.py > /tmp/old.py`) for a before/after.

    python benchmarks/h2_abuse.py                              # every flood, default counts
    python benchmarks/h2_abuse.py --attack ping --count 2000000
    python benchmarks/h2_abuse.py --no-budgets                 # only write back-pressure in the way
    python benchmarks/h2_abuse.py --big-answer --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

PATH = "/bench.Service/Echo"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
COUNTS = {"ping": 2_000_000, "settings": 3_000_000, "reset": 500_000, "continuation": 2_000_000}


def load(module: str | None) -> ModuleType:
    if module is None:
        from modelfleet.server import h2grpc

        return h2grpc
    spec = importlib.util.spec_from_file_location("h2grpc_under_test", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", (len(payload) << 8) | kind, flags, stream) + payload


# -- the server process -------------------------------------------------------------------------------


def serve(module: str | None, loop: str, budgets: bool) -> None:
    h2 = load(module)
    unbounded = dict.fromkeys(
        ("max_rst_stream_frames", "max_ping_frames", "max_settings_frames", "max_empty_frames"), 10**9
    )
    limits = h2.Limits() if budgets else h2.Limits(**unbounded)

    async def echo(message: bytes, call: Any) -> bytes:
        return message

    async def main() -> None:
        logging.basicConfig(level=logging.INFO, format="server: %(message)s")  # what it closes and why
        server = h2.H2Server({PATH: echo}, limits)
        port = await server.start("127.0.0.1", 0)
        print(port, flush=True)
        await asyncio.Event().wait()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# -- the floods -----------------------------------------------------------------------------------------


def request_block() -> bytes:
    """:method POST, :scheme http, :path, content-type, te: literals never indexed (no table state)."""

    def literal(name: bytes, value: bytes) -> bytes:
        return b"\x10" + bytes((len(name),)) + name + bytes((len(value),)) + value

    return (
        b"\x83\x86"
        + literal(b":path", PATH.encode())
        + literal(b":authority", b"bench")
        + literal(b"content-type", b"application/grpc")
        + literal(b"te", b"trailers")
    )


def batches(attack: str, count: int, batch: int) -> Any:
    """The flood as byte strings of `batch` frames each."""
    if attack == "ping":
        one = frame(PING, 0, 0, b"12345678")
        yield from (one * min(batch, count - i) for i in range(0, count, batch))
    elif attack == "settings":
        one = frame(SETTINGS, 0, 0)
        yield from (one * min(batch, count - i) for i in range(0, count, batch))
    elif attack == "reset":
        block = request_block()
        for start in range(0, count, batch):
            yield b"".join(
                frame(HEADERS, 0x4, s, block) + frame(RST_STREAM, 0, s, struct.pack(">I", 8))
                for s in range(2 * start + 1, 2 * min(start + batch, count) + 1, 2)
            )
    elif attack == "continuation":
        yield frame(HEADERS, 0, 1, request_block()[:4])
        one = frame(CONTINUATION, 0, 1)
        yield from (one * min(batch, count - i) for i in range(0, count, batch))


def read_goaway(sock: socket.socket, timeout_s: float) -> tuple[str, int]:
    """Read what the server wrote, for up to timeout_s, until GOAWAY or EOF: ('GOAWAY <code>' | 'no
    GOAWAY', bytes read). (The socket's small receive buffer makes reading a backlog slow.)"""
    sock.settimeout(timeout_s)
    buffer, total = b"", 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                return "closed without GOAWAY", total
            total += len(data)
            buffer += data
            pos = 0
            while len(buffer) - pos >= 9:
                word, _, _ = struct.unpack_from(">IBI", buffer, pos)
                length, kind = word >> 8, word & 0xFF
                if len(buffer) - pos - 9 < length:
                    break
                if kind == GOAWAY:
                    code = struct.unpack_from(">I", buffer, pos + 13)[0]
                    reason = buffer[pos + 17 : pos + 9 + length].decode(errors="replace")
                    return f"GOAWAY code {code} ({reason})", total
                pos += 9 + length
            buffer = buffer[pos:]
    except (TimeoutError, ConnectionError) as exc:
        return f"no GOAWAY ({type(exc).__name__}, {total / 2**20:.1f} MiB read)", total
    return f"no GOAWAY in {timeout_s:.0f} s ({total / 2**20:.1f} MiB read)", total


def flood(port: int, pid: int, attack: str, count: int) -> str:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that never reads
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    time.sleep(0.2)
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            try:
                peak[0] = max(peak[0], rss_kib(pid))
            except (FileNotFoundError, ProcessLookupError):
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent, how = 0, "all sent"
    sock.settimeout(3.0)
    started = time.monotonic()
    try:
        for chunk in batches(attack, count, 10_000):
            sock.sendall(chunk)
            sent += len(chunk)
    except TimeoutError:
        how = "server stopped reading (send blocked 3 s)"
    except ConnectionError as exc:
        how = f"connection closed by the server ({type(exc).__name__})"
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    done.set()
    watcher.join()
    peak[0] = max(peak[0], rss_kib(pid))
    goaway, _ = read_goaway(sock, 5.0)
    sock.close()
    return (
        f"{attack}: {count:,} frames offered, {sent / 2**20:.1f} MiB sent in {elapsed:.1f} s, {how}; "
        f"{goaway}; server RSS +{(peak[0] - before) / 1024:.1f} MiB (peak {peak[0] / 1024:.0f} MiB)"
    )


# -- big buffers, in process ------------------------------------------------------------------------------


class Wire:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if key == "peername" else default

    def close(self) -> None:
        pass

    abort = close

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def big_buffers(h2: ModuleType, size: int) -> tuple[float, float]:
    """Loop seconds to send one `size`-byte answer and to receive one `size`-byte request."""
    answer = b"x" * size
    received = asyncio.Event()

    async def handler(message: bytes, call: Any) -> bytes:
        if len(message) == size:
            received.set()
            return b""
        return answer

    limits = h2.Limits(
        max_message_bytes=2 * size, connection_window_bytes=2**31 - 1, stream_window_bytes=2**31 - 1
    )
    conn = h2.Connection(h2.H2Server({PATH: handler}, limits))
    wire = Wire()
    conn.connection_made(wire)
    window = struct.pack(">HI", 4, 2**31 - 1)  # SETTINGS_INITIAL_WINDOW_SIZE
    conn.data_received(PREFACE + frame(SETTINGS, 0, 0, window))
    conn.data_received(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535)))
    block = request_block()
    conn.data_received(frame(HEADERS, 0x4, 1, block) + frame(DATA, 0x1, 1, b"\x00\x00\x00\x00\x01a"))
    started = time.process_time()
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the handler runs, the answer is written
    send_s = time.process_time() - started
    assert wire.written >= size, wire.written
    message = b"\x00" + struct.pack(">I", size) + b"y" * size
    frames = b"".join(
        frame(DATA, 0, 3, message[i : i + 2**20 - 1024]) for i in range(0, len(message), 2**20 - 1024)
    )
    conn.data_received(frame(HEADERS, 0x4, 3, block))
    started = time.process_time()
    for i in range(0, len(frames), 65_536):
        conn.data_received(frames[i : i + 65_536])
    conn.data_received(frame(DATA, 0x1, 3))
    receive_s = time.process_time() - started
    await asyncio.wait_for(received.wait(), 5)
    conn.connection_lost(None)
    return send_s, receive_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attack", choices=(*COUNTS, "all"), default="all")
    parser.add_argument("--count", type=int, help="frames in the flood (default: per attack, see COUNTS)")
    parser.add_argument("--module", help="another h2grpc.py to run (default: the installed one)")
    parser.add_argument("--big-answer", action="store_true", help="measure the buffers instead, in process")
    parser.add_argument("--rounds", type=int, default=3, help="--big-answer rounds")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the server's event loop"
    )
    parser.add_argument(
        "--no-budgets",
        action="store_true",
        help="frame budgets out of reach: only back-pressure bounds memory",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.module, args.loop, not args.no_budgets)
        return
    if args.big_answer:
        h2 = load(args.module)
        results = [asyncio.run(big_buffers(h2, 16 * 2**20)) for _ in range(args.rounds)]
        sends, receives = [r[0] * 1e3 for r in results], [r[1] * 1e3 for r in results]
        print(
            f"16 MiB answer: loop CPU ms {', '.join(f'{s:.0f}' for s in sends)} (median {statistics.median(sends):.0f})"
        )
        print(
            f"16 MiB request in 64 KiB reads: loop CPU ms {', '.join(f'{s:.0f}' for s in receives)} "
            f"(median {statistics.median(receives):.0f})"
        )
        return
    command = [sys.executable, __file__, "--serve", "--loop", args.loop]
    command += ["--module", args.module] if args.module else []
    command += ["--no-budgets"] if args.no_budgets else []
    for attack in COUNTS if args.attack == "all" else (args.attack,):
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            print(flood(port, server.pid, attack, args.count or COUNTS[attack]), flush=True)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
