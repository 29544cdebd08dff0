"""Issue 5's gRPC target: gRPC ModelInfer on `identity` reaches at least the HTTP binary throughput.

One `modelfleet serve` (identity, ONNX Runtime, 1 intra-op thread) serves both fronts; in the same
run, alternately:
  HTTP   `modelfleet bench --encoding binary -c 16` (its own client processes, -p);
  gRPC   grpc.aio unary calls at concurrency 16 in 1-2 client processes, each sending one
         pre-serialized ModelInferRequest ([1, 16] FP32 in raw_input_contents).
Prints requests/s of each and the ratio gRPC / HTTP, and the CPU each request cost the server and
the client: on a small machine the client shares the cores with the server, so the ratio of
requests/s is also a ratio of client costs (grpc.aio's client is far dearer than the bench's
hand-written HTTP/1.1 one); server CPU per request is the figure that belongs to the server.

    python bench/grpc_vs_http.py --seconds 10 --processes 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONCURRENCY = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_repo(root: Path) -> Path:
    import onnx

    from modelfleet.demo.onnx_files import identity_model

    (root / "identity" / "1").mkdir(parents=True)
    onnx.save(identity_model(), root / "identity" / "1" / "model.onnx")
    return root


def wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/models/identity/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def http_bench(url: str, seconds: float, processes: int, workdir: Path) -> float:
    report = workdir / "http.json"
    subprocess.run(
        [sys.executable, "-m", "modelfleet", "bench", "--url", url, "--model", "identity",
         "--encoding", "binary", "-c", str(CONCURRENCY), "-p", str(processes), "--duration", str(seconds),
         "--warmup", "2", "--report", str(report), "--fail-on-error"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return float(json.loads(report.read_text())["requests_per_s"])


async def _grpc_load(target: str, concurrency: int, warmup_s: float, seconds: float) -> tuple[int, int]:
    import grpc
    import numpy as np

    from modelfleet.protocol.grpc import grpc_service_pb2 as pb
    from modelfleet.protocol.grpc import method_path

    body = pb.ModelInferRequest(
        model_name="identity",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])],
        raw_input_contents=[np.ones((1, 16), np.float32).tobytes()],
    ).SerializeToString()
    counts = [0, 0]  # ok, errors, while recording
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method_path("ModelInfer"))  # bytes in, bytes out: no client codec
        start = time.monotonic()
        record_from, stop_at = start + warmup_s, start + warmup_s + seconds

        async def worker() -> None:
            while (now := time.monotonic()) < stop_at:
                try:
                    await call(body)
                    ok = True
                except grpc.aio.AioRpcError:
                    ok = False
                if now >= record_from:
                    counts[0 if ok else 1] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts[0], counts[1]


def _grpc_process(target: str, concurrency: int, warmup_s: float, seconds: float, out: object) -> None:
    try:
        import uvloop

        result = uvloop.run(_grpc_load(target, concurrency, warmup_s, seconds))
    except ImportError:
        result = asyncio.run(_grpc_load(target, concurrency, warmup_s, seconds))
    out.put(result)  # type: ignore[attr-defined]


def grpc_bench(target: str, seconds: float, processes: int) -> tuple[float, int]:
    return spread(_grpc_process, target, seconds, processes)


def spread(run: Any, target: Any, seconds: float, processes: int) -> tuple[float, int]:
    """`run(target, connections, warmup_s, seconds, queue)` in `processes` spawned clients sharing
    CONCURRENCY connections; (answers per second, errors) over all of them."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    shares = [CONCURRENCY // processes + (i < CONCURRENCY % processes) for i in range(processes)]
    procs = [context.Process(target=run, args=(target, n, 2.0, seconds, queue)) for n in shares]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(ok for ok, _ in results) / seconds, sum(err for _, err in results)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds used by this process's finished children (client processes, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def per_request_us(server_pid: int, seconds: float, run: Callable[[], float]) -> tuple[float, float, float]:
    """Run one measurement; its requests/s and the server's and client's CPU microseconds per
    request (their CPU over the whole run, warm-up included, over the requests it made)."""
    server0, client0 = cpu_s(server_pid), children_cpu_s()
    rps = run()
    requests = rps * (seconds + 2.0)
    return rps, (cpu_s(server_pid) - server0) / requests * 1e6, (children_cpu_s() - client0) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="HTTP, gRPC alternations")
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2), help="client processes per side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo = make_repo(workdir / "repo")
        http_port, grpc_port = free_port(), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "modelfleet", "serve", str(repo), "--port", str(http_port),
             "--grpc-port", str(grpc_port), "--intra-op-threads", "1", "--startup-load", "all",
             "--log-level", "warning"],
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_ready(url)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(
                f"nproc {os.cpu_count()}, loadavg {load}, -c {CONCURRENCY}, {args.processes} client process(es)"
            )
            target = f"127.0.0.1:{grpc_port}"
            errors: list[int] = []  # gRPC calls that failed, per round

            def grpc_run() -> float:
                rps, errs = grpc_bench(target, args.seconds, args.processes)
                errors.append(errs)
                return rps

            for i in range(args.rounds):
                http, http_server, http_client = per_request_us(
                    server.pid, args.seconds, lambda: http_bench(url, args.seconds, args.processes, workdir)
                )
                grpc_rps, grpc_server, grpc_client = per_request_us(server.pid, args.seconds, grpc_run)
                print(
                    f"round {i + 1}: HTTP binary {http:,.0f} req/s, gRPC {grpc_rps:,.0f} req/s "
                    f"({errors[-1]} errors) = {grpc_rps / http:.2f}x; CPU per request: server HTTP "
                    f"{http_server:.0f} us, gRPC {grpc_server:.0f} us; client HTTP {http_client:.0f} us, "
                    f"gRPC {grpc_client:.0f} us"
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
