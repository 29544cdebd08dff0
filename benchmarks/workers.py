"""Issue 5's worker targets, each mode started here and driven by `modelfleet bench` in the same run.

identity, binary, -c 16: --workers 1 throughput >= 70 % of --workers 0 (the process hop)
minilm-sentiment, -c 32: --workers 2 throughput >= --workers 0 (2 cores)
kill -9 of a worker under -c 16: errors only for its in-flight requests, a replacement serving
within 5 s, and the workers' memory back to its level before the kill

python benchmarks/workers.py --repo /tmp/demo --seconds 30             # all three
python benchmarks/workers.py --repo /tmp/demo --only kill --kill-seconds 60
python benchmarks/workers.py --only ipc     # the hop alone: one multiplexed socket vs a pool of 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, repo: Path, workers: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelfleet", "serve", str(repo), "--port", port, "--grpc-port", "0", "--workers", workers,
             "--log-level", "warning"],
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit(f"server --workers {workers} did not start") from None
                time.sleep(0.2)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def bench(
    url: str, model: str, concurrency: int, seconds: float, warmup: float, encoding: str
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [sys.executable, "-m", "modelfleet", "bench", "--url", url, "-m", model, "-c", str(concurrency),
             "-d", str(seconds), "--warmup", str(warmup), "--encoding", encoding, "--report", report.name,
             "--no-fail-on-error"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        doc: dict[str, Any] = json.loads(Path(report.name).read_text())
    return doc


def throughput(repo: Path, workers: str, model: str, concurrency: int, args: argparse.Namespace) -> float:
    server = Server(repo, workers)
    try:
        doc = bench(server.url, model, concurrency, args.seconds, args.warmup, args.encoding)
    finally:
        server.stop()
    rate = float(doc["requests_per_s"])
    print(f"  --workers {workers}: {rate:9.1f} req/s  (errors {json.dumps(doc['errors'])})")
    return rate


def compare(
    repo: Path, model: str, concurrency: int, a: str, b: str, target: float, args: argparse.Namespace
) -> None:
    print(f"{model}, {args.encoding}, -c {concurrency}, {args.seconds:g} s:")
    base = throughput(repo, a, model, concurrency, args)
    other = throughput(repo, b, model, concurrency, args)
    ratio = other / base if base else 0.0
    verdict = "meets" if ratio >= target else "MISSES"
    print(f"  ratio --workers {b} / --workers {a}: {ratio:.2f} ({verdict} the {target:.0%} target)")


def worker_rss(server: Server) -> int:
    return sum(int(w["rss_bytes"]) for w in server.get("/v2/workers")["workers"])


def kill(repo: Path, args: argparse.Namespace) -> None:
    model = args.kill_model
    print(f"kill -9 during {args.kill_seconds:g} s of {model} at -c 16 with --workers 2:")
    server = Server(repo, "2")
    try:
        result: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: result.update(bench(server.url, model, 16, args.kill_seconds, 1.0, args.encoding))
        )
        load.start()
        time.sleep(1.0 + args.kill_seconds / 3)
        before = worker_rss(server)
        docs = server.get("/v2/workers")["workers"]
        victim = next(w for w in docs if any(m["name"] == model for m in w["models"]))
        in_flight = victim["in_flight"]
        killed = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        replaced_s = None
        while replaced_s is None and time.monotonic() - killed < 30:
            time.sleep(0.05)
            now = next(w for w in server.get("/v2/workers")["workers"] if w["id"] == victim["id"])
            if now["state"] == "ready" and now["pid"] != victim["pid"]:
                replaced_s = time.monotonic() - killed
        load.join()
        after = worker_rss(server)
    finally:
        server.stop()
    errors = result.get("errors", {})
    warm = result.get("warmup_errors")
    print(
        f"  in flight on the victim just before the kill: ~{in_flight}; errors {json.dumps(errors)} (warm-up: {warm})"
    )
    print(
        f"  replacement ready after {replaced_s if replaced_s is None else round(replaced_s, 2)} s (target 5 s)"
    )
    print(f"  workers' RSS before {before / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB")
    print(f"  throughput over the run: {result.get('requests_per_s', 0):.1f} req/s")


def echo(fds: list[int]) -> None:
    """The far end of the IPC measurement: answers every Infer with its own tensors."""
    import asyncio

    import uvloop

    from modelfleet.workers import messages as m

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def protocol() -> m.FrameProtocol:
            def answer(msg: m.Message, raw: memoryview) -> None:
                assert isinstance(msg, m.Infer)
                proto.send(m.Result(msg.id, msg.model, "1", msg.inputs), [raw])

            proto = m.FrameProtocol(answer, lambda _: done.done() or done.set_result(None))
            return proto

        for fd in fds:
            await loop.create_unix_connection(protocol, sock=socket.socket(fileno=fd))
        await done

    uvloop.run(serve())


def ipc(connections: int, concurrency: int, seconds: float) -> float:
    """Infer round trips per second over `connections` sockets to an echo process."""
    import asyncio

    import numpy as np
    import uvloop

    from modelfleet.workers import messages as m
    from modelfleet.workers.client import Connection

    pairs = [socket.socketpair() for _ in range(connections)]
    child = subprocess.Popen(
        [sys.executable, __file__, "--echo", ",".join(str(b.fileno()) for _, b in pairs)],
        pass_fds=[b.fileno() for _, b in pairs],
    )
    for _, b in pairs:
        b.close()

    async def drive() -> float:
        pool = [await Connection.open(0, a) for a, _ in pairs]
        tensors, buffers = m.describe([("input", "FP32", np.arange(16, dtype=np.float32).reshape(1, 16))])
        done = 0
        end = time.perf_counter() + seconds

        async def client(i: int) -> None:
            nonlocal done
            connection = pool[i % len(pool)]
            while time.perf_counter() < end:
                await connection.request(m.Infer(connection.next_id(), "identity", "1", tensors), buffers)
                done += 1

        await asyncio.gather(*(client(i) for i in range(concurrency)))
        for connection in pool:
            connection.close()
        return done / seconds

    rate = uvloop.run(drive())
    child.wait(10)
    return rate


def ipc_compare(args: argparse.Namespace) -> None:
    print("the hop alone (front <-> echo process, 16 concurrent Infer of 1x16 FP32), req/s:")
    rates: dict[int, list[float]] = {1: [], 4: []}
    for _ in range(3):
        for connections in rates:
            rates[connections].append(ipc(connections, 16, args.seconds / 3))
    for connections, figures in rates.items():
        print(
            f"  {connections} connection(s): median {sorted(figures)[1]:9.0f}  ({', '.join(f'{r:.0f}' for r in figures)})"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        echo([int(fd) for fd in sys.argv[2].split(",")])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repo", type=Path, default=Path("/tmp/demo"), help="built by `modelfleet demo-repo`"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--encoding", choices=["json", "binary"], default="binary")
    parser.add_argument("--only", choices=["identity", "minilm", "kill", "ipc"], action="append")
    parser.add_argument("--kill-seconds", type=float, default=60.0)
    parser.add_argument("--kill-model", default="identity")
    args = parser.parse_args()
    if not (args.repo / "identity").is_dir():
        subprocess.run([sys.executable, "-m", "modelfleet", "demo-repo", str(args.repo)], check=True)
    chosen = args.only or ["identity", "minilm", "kill"]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, loadavg {load}")
    if "identity" in chosen:
        compare(args.repo, "identity", 16, "0", "1", 0.70, args)
    if "minilm" in chosen:
        compare(args.repo, "minilm-sentiment", 32, "0", "2", 1.0, args)
    if "kill" in chosen:
        kill(args.repo, args)
    if "ipc" in chosen:
        ipc_compare(args)


if __name__ == "__main__":
    main()
