"""Issue 5's gRPC target: gRPC ModelInfer on `identity` reaches at least the HTTP binary throughput.

One `modelfleet serve` (identity, ONNX Runtime, 1 intra-op thread) serves both fronts; in the same
run, alternately, with two kinds of client:
  h2load (nghttp2's C load generator, `apt-get install nghttp2-client`), the same client for both
         fronts: 16 connections, one request in flight on each; HTTP/1.1 POSTs of the V2 binary
         body to /v2/models/identity/infer, and gRPC ModelInfer calls over h2c. Each side's
         answers are checked against the model's statistics (successes up by at least the
         answers counted, no failures), since h2load sees only HTTP status 200 for gRPC.
  python `modelfleet bench --encoding binary -c 16` for HTTP against grpc.aio unary calls at
         concurrency 16 for gRPC, in 1-2 client processes each.
Prints requests/s of each and the ratio gRPC / HTTP, and the CPU each request cost the server and
the client: on a small machine the client shares the cores with the server, so the ratio of
requests/s is also a ratio of client costs (grpc.aio's client is far dearer than the bench's
hand-written HTTP/1.1 one, which is why h2load, equal for both, is the comparison that counts);
server CPU per request is the figure that belongs to the server.

    python benchmarks/grpc_vs_http.py --seconds 10 --rounds 3
    python benchmarks/grpc_vs_http.py --seconds 10 --rounds 3 --client h2load --h2 lib   # on the `h2` library
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
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

    from modelfleet.protocol.grpc import method_path

    body = identity_message()
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


def identity_message() -> bytes:
    """One ModelInferRequest for `identity`: a [1, 16] FP32 tensor in raw_input_contents."""
    import numpy as np

    from modelfleet.protocol.grpc import grpc_service_pb2 as pb

    return pb.ModelInferRequest(
        model_name="identity",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])],
        raw_input_contents=[np.ones((1, 16), np.float32).tobytes()],
    ).SerializeToString()


def successes(url: str) -> tuple[int, int]:
    """identity's inference successes and failures so far (GET .../stats)."""
    with urllib.request.urlopen(f"{url}/v2/models/identity/stats", timeout=5) as r:
        stats = json.load(r)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"]), int(stats["fail"]["count"])


def h2load(args: list[str], seconds: float) -> tuple[float, int]:
    """Run h2load for `seconds` after a 2 s warm-up: (requests/s, requests not answered 2xx)."""
    out = subprocess.run(
        ["h2load", "-t", "1", "-c", str(CONCURRENCY), "-m", "1", "-D", str(round(seconds)), "--warm-up-time", "2", *args],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    if done is None or rate is None:
        raise RuntimeError(f"h2load printed no figures:\n{out}")
    return float(rate.group(1)), int(done.group(1)) - int(done.group(3))


def h2load_pair(
    url: str, grpc_target: str, seconds: float, workdir: Path, server_pid: int
) -> list[tuple[float, float]]:
    """HTTP binary and gRPC (requests/s, server CPU us per request), the same client for both;
    raises on any failed answer."""
    import numpy as np

    from modelfleet.bench.encode import binary_body
    from modelfleet.bench.synth import Tensor
    from modelfleet.protocol.grpc import method_path

    http = binary_body([Tensor("input", "FP32", np.ones((1, 16), np.float32))])  # the same tensor
    message = identity_message()
    (workdir / "grpc.bin").write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)  # gRPC framing
    (workdir / "http.bin").write_bytes(http.content)
    http_headers = [arg for name, value in http.headers() for arg in ("-H", f"{name}: {value}")]
    rates: list[tuple[float, float]] = []
    for args in (
        ["--h1", "-d", str(workdir / "http.bin"), *http_headers, f"{url}/v2/models/identity/infer"],
        ["-d", str(workdir / "grpc.bin"), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{grpc_target}{method_path('ModelInfer')}"],
    ):  # fmt: skip
        before, cpu0 = successes(url), cpu_s(server_pid)
        rps, failed = h2load(args, seconds)
        after, cpu = successes(url), cpu_s(server_pid) - cpu0
        answered = after[0] - before[0]
        if failed or after[1] != before[1] or answered < rps * seconds:
            raise RuntimeError(f"h2load: {failed} failed, {after[1] - before[1]} failed inferences")
        rates.append((rps, cpu / answered * 1e6))
    return rates


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


# `python -c _SERVE_WITH_MODULE FILE serve ...`: modelfleet with server/h2grpc.py's H2Server from FILE
_SERVE_WITH_MODULE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("h2grpc_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
import modelfleet.server.grpc
modelfleet.server.grpc.H2Server = module.H2Server
from modelfleet.cli import main
sys.argv = ["modelfleet", *sys.argv[2:]]
main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="HTTP, gRPC alternations")
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2), help="client processes per side")
    parser.add_argument(
        "--client", choices=("both", "h2load", "python"), default="both", help="which clients to run"
    )
    parser.add_argument(
        "--h2",
        default="ours",
        help="the gRPC front's HTTP/2 layer: ours (server/h2grpc.py), lib (benchmarks/h2lib_prototype.py, the `h2` "
        "library), or the path of another h2grpc.py (e.g. `git show REV:src/modelfleet/server/h2grpc.py`)",
    )
    args = parser.parse_args()
    if args.client != "python" and shutil.which("h2load") is None:
        parser.error("h2load is not installed: apt-get install nghttp2-client (or --client python)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo = make_repo(workdir / "repo")
        http_port, grpc_port = free_port(), free_port()
        if args.h2 == "ours":
            serve = ["-m", "modelfleet"]
        elif args.h2 == "lib":
            serve = [str(Path(__file__).with_name("h2lib_prototype.py"))]
        else:  # another version of server/h2grpc.py, for a before / after in one run
            serve = ["-c", _SERVE_WITH_MODULE, args.h2]
        server = subprocess.Popen(
            [sys.executable, *serve, "serve", str(repo), "--port", str(http_port),
             "--grpc-port", str(grpc_port), "--intra-op-threads", "1", "--startup-load", "all",
             "--log-level", "warning"],
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_ready(url)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(
                f"nproc {os.cpu_count()}, loadavg {load}, -c {CONCURRENCY}, {args.processes} client process(es), "
                f"HTTP/2 layer: {args.h2}"
            )
            target = f"127.0.0.1:{grpc_port}"
            errors: list[int] = []  # gRPC calls that failed, per round

            def grpc_run() -> float:
                rps, errs = grpc_bench(target, args.seconds, args.processes)
                errors.append(errs)
                return rps

            for i in range(args.rounds):
                if args.client != "python":
                    (h1, h1_us), (h2, h2_us) = h2load_pair(url, target, args.seconds, workdir, server.pid)
                    print(
                        f"round {i + 1}, h2load for both: HTTP binary {h1:,.0f} req/s, gRPC {h2:,.0f} req/s "
                        f"= {h2 / h1:.2f}x; server CPU per request: HTTP {h1_us:.0f} us, gRPC {h2_us:.0f} us"
                    )
                if args.client == "h2load":
                    continue
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
