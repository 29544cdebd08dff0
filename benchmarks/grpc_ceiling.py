"""Issue 5: how fast can a bare gRPC server on this machine answer ModelInfer at all?

Each server variant answers every unary call on `/inference.GRPCInferenceService/ModelInfer` with one
fixed, pre-serialized ModelInferResponse (no model, no data plane, no codec), in its own process;
the client is benchmarks/grpc_vs_http.py's (grpc.aio unary calls at concurrency 16 in 1-2 processes,
same request bytes), or with --client grpclib a grpclib one. The figure is the ceiling a gRPC front
built on that variant could reach here, to set beside the full server's HTTP binary figure.

    python benchmarks/grpc_ceiling.py --seconds 10 --processes 2 aio-uvloop sync-direct grpclib

Variants:
  aio-asyncio     grpc.aio server on the standard asyncio loop
  aio-uvloop      grpc.aio server on uvloop (how `modelfleet serve` runs it, beside uvicorn)
  aio-uvloop-opts aio-uvloop with so_reuseport 1, max_concurrent_streams 100, optimization_target
                  throughput and a 4-thread migration pool
  aio-thread      grpc.aio on its own thread and asyncio loop; the main (uvloop) loop idle
  aio-hop         aio-uvloop whose handler awaits one job on a 1-thread executor, as the data plane
                  does for every inference (the thread hop, no model)
  aio-2proc       two aio-uvloop processes sharing the port with SO_REUSEPORT (a bare ceiling only:
                  the second process could not reach this process's data plane)
  sync-direct     grpcio's sync grpc.server(ThreadPoolExecutor(16)), handler answers directly
  sync-handoff    sync server whose handler hands each call to a uvloop loop in another thread
                  (asyncio.run_coroutine_threadsafe) and waits for it: how it would reach the
                  data plane
  grpclib         grpclib (pure asyncio + h2) on uvloop, raw-bytes codec
Needs grpclib importable for the last (e.g. pip install --target /tmp/gldeps grpclib and
PYTHONPATH=...:/tmp/gldeps); it is not a dependency of modelfleet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_vs_http import CONCURRENCY, children_cpu_s, cpu_s, free_port, grpc_bench, spread

VARIANTS = (
    "aio-asyncio",
    "aio-uvloop",
    "aio-uvloop-opts",
    "aio-thread",
    "aio-hop",
    "aio-2proc",
    "sync-direct",
    "sync-handoff",
    "grpclib",
)
PATH = "/inference.GRPCInferenceService/ModelInfer"


def answer() -> bytes:
    """The fixed answer: identity's [1, 16] FP32 output, as the full server would send it."""
    import numpy as np

    from modelfleet.protocol.grpc import grpc_service_pb2 as pb

    return pb.ModelInferResponse(
        model_name="identity",
        model_version="1",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="output", datatype="FP32", shape=[1, 16])],
        raw_output_contents=[np.ones((1, 16), np.float32).tobytes()],
    ).SerializeToString()


def _aio_server(port: int, options: list[tuple[str, Any]], pool: int | None = None, hop: bool = False) -> Any:
    import grpc

    body = answer()
    executor = ThreadPoolExecutor(1)

    def work() -> bytes:
        return body

    async def infer(raw: bytes, context: object) -> bytes:
        if hop:
            return await asyncio.get_running_loop().run_in_executor(executor, work)
        return body

    kwargs: dict[str, Any] = {"options": options}
    if pool is not None:
        kwargs["migration_thread_pool"] = ThreadPoolExecutor(pool)
    server = grpc.aio.server(**kwargs)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


async def _serve_aio(
    port: int, options: list[tuple[str, Any]], pool: int | None = None, hop: bool = False
) -> None:
    server = _aio_server(port, options, pool, hop)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def _serve_sync(port: int, handoff: bool) -> None:
    import grpc

    body = answer()
    loop: asyncio.AbstractEventLoop | None = None
    if handoff:
        import uvloop

        loop = uvloop.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

    async def work() -> bytes:
        return body

    def infer(raw: bytes, context: object) -> bytes:
        if loop is None:
            return body
        return asyncio.run_coroutine_threadsafe(work(), loop).result()

    server = grpc.server(ThreadPoolExecutor(CONCURRENCY), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


class _RawCodec:
    """grpclib codec passing bytes through, like grpcio's handlers without serializers."""

    __content_subtype__ = "proto"

    def encode(self, message: bytes, message_type: object) -> bytes:
        return message

    def decode(self, data: bytes, message_type: object) -> bytes:
        return data


async def _serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    body = answer()

    async def infer(stream: Any) -> None:  # grpclib's handler: one stream per call
        await stream.recv_message()
        await stream.send_message(body)

    class Service:
        def __mapping__(self) -> dict[str, Handler]:
            return {PATH: Handler(infer, Cardinality.UNARY_UNARY, bytes, bytes)}

    server = Server([Service()], codec=_RawCodec())  # type: ignore[arg-type]
    await server.start("127.0.0.1", port)
    print("ready", flush=True)
    await server.wait_closed()


def serve(variant: str, port: int) -> None:
    import uvloop

    base = [("grpc.so_reuseport", 0)]
    if variant == "aio-asyncio":
        asyncio.run(_serve_aio(port, base))
    elif variant == "aio-uvloop":
        uvloop.run(_serve_aio(port, base))
    elif variant == "aio-uvloop-opts":
        opts = [
            ("grpc.so_reuseport", 1),
            ("grpc.max_concurrent_streams", 100),
            ("grpc.optimization_target", "throughput"),
        ]
        uvloop.run(_serve_aio(port, opts, pool=4))
    elif variant == "aio-hop":
        uvloop.run(_serve_aio(port, base, hop=True))
    elif variant == "aio-2proc":
        twin = subprocess.Popen(
            [sys.executable, __file__, "--serve", "aio-2proc-twin", "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        signal.signal(signal.SIGTERM, lambda *_: (twin.kill(), os._exit(0)))
        uvloop.run(_serve_aio(port, [("grpc.so_reuseport", 1)]))
    elif variant == "aio-2proc-twin":
        uvloop.run(_serve_aio(port, [("grpc.so_reuseport", 1)]))
    elif variant == "aio-thread":
        threading.Thread(target=lambda: asyncio.run(_serve_aio(port, base)), daemon=True).start()
        uvloop.run(asyncio.Event().wait())
    elif variant in ("sync-direct", "sync-handoff"):
        _serve_sync(port, handoff=variant == "sync-handoff")
    elif variant == "grpclib":
        uvloop.run(_serve_grpclib(port))
    else:
        raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


async def _grpclib_load(port: int, concurrency: int, warmup_s: float, seconds: float) -> tuple[int, int]:
    import numpy as np
    from grpclib.client import Channel, UnaryUnaryMethod
    from grpclib.exceptions import GRPCError

    from modelfleet.protocol.grpc import grpc_service_pb2 as pb

    body = pb.ModelInferRequest(
        model_name="identity",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])],
        raw_input_contents=[np.ones((1, 16), np.float32).tobytes()],
    ).SerializeToString()
    counts = [0, 0]
    channel = Channel("127.0.0.1", port, codec=_RawCodec())  # type: ignore[arg-type]
    call = UnaryUnaryMethod(channel, PATH, bytes, bytes)
    start = time.monotonic()
    record_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def worker() -> None:
        while (now := time.monotonic()) < stop_at:
            try:
                await call(body)
                ok = True
            except GRPCError:
                ok = False
            if now >= record_from:
                counts[0 if ok else 1] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    channel.close()
    return counts[0], counts[1]


def _grpclib_process(port: int, concurrency: int, warmup_s: float, seconds: float, out: Any) -> None:
    import uvloop

    out.put(uvloop.run(_grpclib_load(port, concurrency, warmup_s, seconds)))


def grpclib_bench(port: int, seconds: float, processes: int) -> tuple[float, int]:
    return spread(_grpclib_process, port, seconds, processes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help="server variants to measure")
    parser.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per measurement")
    parser.add_argument("--processes", type=int, default=2, choices=(1, 2), help="client processes")
    parser.add_argument("--client", choices=("grpcio", "grpclib"), default="grpcio")
    parser.add_argument("--serve", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"nproc {os.cpu_count()}, loadavg {load}, -c {CONCURRENCY}, {args.processes} {args.client} client(s)"
    )
    for variant in args.variants:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", variant, "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{variant}: server did not start")
            before, clients_before = cpu_s(server.pid), children_cpu_s()
            if args.client == "grpcio":
                rps, errors = grpc_bench(f"127.0.0.1:{port}", args.seconds, args.processes)
            else:
                rps, errors = grpclib_bench(port, args.seconds, args.processes)
            cpu = cpu_s(server.pid) - before  # includes the 2 s warm-up, as the client's does
            client_cpu = children_cpu_s() - clients_before
            calls = rps * (args.seconds + 2.0)
            print(
                f"{variant:16} {rps:8,.0f} req/s ({errors} errors); CPU per call ~{cpu / calls * 1e6:4.0f} us "
                f"server ({cpu / (args.seconds + 2.0):4.0%} of a core), ~{client_cpu / calls * 1e6:4.0f} us client",
                flush=True,
            )
        finally:
            server.terminate()  # aio-2proc stops its twin on SIGTERM
            server.wait(30)


if __name__ == "__main__":
    main()
