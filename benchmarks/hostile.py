"""Issue 16's hostile-client targets, measured against `modelfleet serve` with its default settings.

  bytes     The tiny BYTES request: a binary body whose JSON header declares a BYTES input of shape
            [268435456] with a 4-byte payload, sent over many connections at once for a few seconds;
            the same over gRPC (shape [2^27], raw_input_contents one 4-byte item, grpcio).
            Target: 400 (INVALID_ARGUMENT), server RSS +< 64 MiB, /v2/health/live answered within
            250 ms throughout (polled back to back from another process).
  json      A 64 MiB JSON body (max_body_bytes, the default) of FP32 numbers to an identity model of
            that many elements; liveness polled every 10 ms. Target: liveness < 200 ms; RSS peak.
  partial   A connection that sends part of its headers, and one that sends nothing.
            Target: closed within 35 s (header_timeout_s 30 by default).
  decode    (in process, no server) the 64 MiB JSON body decoded as the server does it for bodies
            over 1 MiB, `asyncio.to_thread(decode_request, ...)`, with a 5 ms heartbeat task on the
            loop: the longest gap between beats is how long the decode thread kept the loop out.
  shutdown  SIGTERM with a slow call in flight on each front (a python model that sleeps; one call
            of --call-s seconds per front; default 25 s, and 40 s, which the deadline cuts).
            Target: new gRPC calls refused within 2 s, exit 0 within 30 s, the cut HTTP call
            answered with JSON.

Liveness is polled and the server's RSS (VmRSS) sampled every 2 ms by a watcher process, away from
the attacking threads' GIL.

    python benchmarks/hostile.py                       # every scenario
    python benchmarks/hostile.py decode --rounds 5     # the decode's hold on the event loop, in process
    python benchmarks/hostile.py bytes json --rounds 3
    python benchmarks/hostile.py shutdown --call-s 25 40
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.models: the tests' tiny models
from overload import Server, free_port, machine, rss_bytes
from tests.models import CallsBegun, identity, slow_repo

from modelfleet.protocol.grpc import grpc_service_pb2 as pb

MiB = 1 << 20
INFER = "/inference.GRPCInferenceService/ModelInfer"
BYTES_HEADER = b'{"inputs":[{"name":"input","shape":[268435456],"datatype":"BYTES","parameters":{"binary_data_size":4}}]}'
DEFAULT_MAX_BODY = 64 * MiB
SCENARIOS = ("bytes", "json", "partial", "shutdown", "decode")
# ---------------------------------------------------------------------------------------------
# the watcher process: liveness latency and server RSS


def watch(port: int, pid: int, interval_s: float, stop: Any, ready: Any, out: Any) -> None:
    """Poll /v2/health/live (one keep-alive connection, `interval_s` between polls) and sample the
    server's RSS every 2 ms until `stop` is set; put (poll times, latencies, failures, rss) in `out`."""
    rss: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            value = rss_bytes(pid)
            if value is not None:
                rss.append((time.monotonic(), value))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    polls: list[tuple[float, float]] = []
    failures = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            conn.request("GET", "/v2/health/live")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures += 1
        except (OSError, http.client.HTTPException):
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        polls.append((t0, time.monotonic() - t0))
        ready.set()
        if interval_s:
            time.sleep(interval_s)
    done.set()
    sampler.join()
    out.put((polls, failures, rss))


class Watcher:
    def __init__(self, server: Server, interval_s: float) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event, ready = ctx.Event(), ctx.Event()
        self.queue: Any = ctx.Queue()
        port = int(server.url.rsplit(":", 1)[1])
        self.proc = ctx.Process(
            target=watch,
            args=(port, server.proc.pid, interval_s, self.stop_event, ready, self.queue),
            daemon=True,
        )
        self.proc.start()
        if not ready.wait(60):
            raise SystemExit("the watcher process did not start")

    def stop(self) -> tuple[list[tuple[float, float]], int, list[tuple[float, int]]]:
        self.stop_event.set()
        result: tuple[list[tuple[float, float]], int, list[tuple[float, int]]] = self.queue.get(timeout=60)
        self.proc.join(10)
        return result


def live_figures(polls: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    inside = [lat for t, lat in polls if start <= t <= end]
    if not inside:
        return {"polls": 0}
    ms = np.array(inside) * 1e3
    return {
        "polls": len(inside),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def rss_figures(rss: list[tuple[float, int]], start: float) -> dict[str, Any]:
    before = [r for t, r in rss if t < start]
    base = before[-1] if before else rss[0][1]
    peak = max(r for _, r in rss)
    return {
        "samples": len(rss),
        "base_mib": base / MiB,
        "peak_mib": peak / MiB,
        "growth_mib": (peak - base) / MiB,
    }


# ---------------------------------------------------------------------------------------------
# raw HTTP/1.1 client pieces


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes, dict[str, str]]:
    """One response from a keep-alive connection; `buffer` carries bytes past it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    del buffer[: end + 4]
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return int(lines[0].split()[1]), body, headers


def bytes_request(model: str) -> bytes:
    body = BYTES_HEADER + b"\0\0\0\0"
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(BYTES_HEADER)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def http_flood(
    port: int, request: bytes, connections: int, seconds: float
) -> tuple[Counter[str], list[bytes]]:
    """`connections` threads, each sending `request` back to back on a keep-alive connection."""
    counts: Counter[str] = Counter()
    samples: list[bytes] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one() -> None:
        sock, buffer = None, bytearray()
        while time.monotonic() < deadline:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                    buffer = bytearray()
                sock.sendall(request)
                status, body, headers = read_response(sock, buffer)
                with lock:
                    counts[str(status)] += 1
                    if len(samples) < 1:
                        samples.append(body)
                if headers.get("connection", "").lower() == "close":
                    sock.close()
                    sock = None
            except OSError as exc:
                with lock:
                    counts[type(exc).__name__] += 1
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return counts, samples


def grpc_flood(
    target: str, request: pb.ModelInferRequest, in_flight: int, seconds: float
) -> tuple[Counter[str], list[str]]:
    """`in_flight` threads, each making the call back to back over one shared channel."""
    counts: Counter[str] = Counter()
    samples: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            INFER,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )

        def one() -> None:
            while time.monotonic() < deadline:
                try:
                    call(request, timeout=30)
                    code, detail = "OK", ""
                except grpc.RpcError as exc:
                    code, detail = exc.code().name, str(exc.details())
                with lock:
                    counts[code] += 1
                    if len(samples) < 1 and detail:
                        samples.append(detail)

        threads = [threading.Thread(target=one) for _ in range(in_flight)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
    return counts, samples


# ---------------------------------------------------------------------------------------------
# scenarios


def big_elements(max_body: int, binary_answer: bool = False, nested: bool = False) -> tuple[int, bytes]:
    """The element count and body of the largest FP32 JSON body that fits in `max_body` bytes
    (the answer asked as JSON, or as binary with `binary_data_output`; `data` flat, or nested as
    the shape [1, n] says)."""
    head = b'{"inputs":[{"name":"input","shape":[1,%d],"datatype":"FP32","data":['
    tail = b']}],"parameters":{"binary_data_output":true}}' if binary_answer else b"]}]}"
    n = (max_body - len(head) - 16 - 48) // 4  # "1.5," per element; room for either tail (and [ ])
    if nested:
        head, tail = head + b"[", b"]" + tail
    body = head % n + b"1.5," * (n - 1) + b"1.5" + tail
    assert len(body) <= max_body, len(body)
    return n, body


def build_repo(root: Path, elements: int) -> Path:
    identity(root / "identity" / "1" / "model.onnx")
    identity(root / "bytes" / "1" / "model.onnx", "BYTES", ("batch",))
    identity(root / "big" / "1" / "model.onnx", "FP32", (1, elements))
    return root


def attack(server: Server, name: str, flood: Any, seconds: float) -> dict[str, Any]:
    """Run `flood()` with the watcher on: liveness latency and RSS before (1 s) and during it."""
    watcher = Watcher(server, 0.0)
    time.sleep(1.0)  # a second of baseline
    start = time.monotonic()
    counts, samples = flood()
    end = time.monotonic()
    time.sleep(0.5)
    polls, failures, rss = watcher.stop()
    out = {
        "name": name,
        "seconds": end - start,
        "answers": dict(counts),
        "sample": samples[0] if samples else None,
        "live_before": live_figures(polls, start - 1.0, start),
        "live_during": live_figures(polls, start, end),
        "live_failures": failures,
        "rss": rss_figures(rss, start),
    }
    print(
        f"{name}: {sum(counts.values())} answers in {end - start:.1f} s {dict(counts)}; "
        f"liveness during: {out['live_during']}, before: {out['live_before']}, failures {failures}; "
        f"RSS {out['rss']['base_mib']:.0f} MiB -> peak {out['rss']['peak_mib']:.0f} MiB "
        f"(+{out['rss']['growth_mib']:.1f}); sample answer {out['sample']!r:.160}",
        flush=True,
    )
    return out


def scenario_bytes(server: Server, grpc_port: int, a: argparse.Namespace) -> list[dict[str, Any]]:
    port = int(server.url.rsplit(":", 1)[1])
    request = bytes_request("bytes")
    body_bytes = len(request.partition(b"\r\n\r\n")[2])
    print(f"BYTES request: {body_bytes} body bytes, its JSON header {len(BYTES_HEADER)} bytes", flush=True)
    message = pb.ModelInferRequest(model_name="bytes")
    tensor = message.inputs.add()
    tensor.name, tensor.datatype = "input", "BYTES"
    tensor.shape.extend([1 << 27])
    message.raw_input_contents.append(b"\0\0\0\0")
    runs = []
    for r in range(a.rounds):
        runs.append(
            attack(server, f"bytes/http round {r + 1}",
                   lambda: http_flood(port, request, a.connections, a.attack_s), a.attack_s)
        )  # fmt: skip
        runs.append(
            attack(server, f"bytes/grpc round {r + 1}",
                   lambda: grpc_flood(f"127.0.0.1:{grpc_port}", message, a.connections, a.attack_s), a.attack_s)
        )  # fmt: skip
    return runs


def scenario_json(server: Server, a: argparse.Namespace) -> list[dict[str, Any]]:
    port = int(server.url.rsplit(":", 1)[1])
    runs = []
    for r, answer_kind in ((r, k) for r in range(a.rounds) for k in a.json_answer):
        body = big_elements(DEFAULT_MAX_BODY, answer_kind == "binary", a.nested)[1]
        watcher = Watcher(server, 0.010)
        time.sleep(1.0)
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", "/v2/models/big/infer", body, {"Content-Type": "application/json"})
        sent = time.monotonic()
        response = conn.getresponse()
        answer = response.read()
        end = time.monotonic()
        conn.close()
        time.sleep(0.5)
        polls, failures, rss = watcher.stop()
        out = {
            "answer_kind": answer_kind,
            "body_bytes": len(body),
            "status": response.status,
            "answer_bytes": len(answer),
            "send_s": sent - start,
            "total_s": end - start,
            "live_during": live_figures(polls, start, end),
            "live_failures": failures,
            "rss": rss_figures(rss, start),
        }
        runs.append(out)
        print(
            f"json round {r + 1}, {len(body)} bytes, {answer_kind} answer: {response.status}, "
            f"answer {len(answer) / MiB:.1f} MiB, sent in "
            f"{sent - start:.2f} s, answered after {end - start:.2f} s; liveness (every 10 ms) during: "
            f"{out['live_during']}, failures {failures}; RSS {out['rss']['base_mib']:.0f} -> peak "
            f"{out['rss']['peak_mib']:.0f} MiB (+{out['rss']['growth_mib']:.0f})",
            flush=True,
        )
    return runs


def scenario_partial(server: Server) -> dict[str, Any]:
    port = int(server.url.rsplit(":", 1)[1])
    results: dict[str, Any] = {}

    def hold(name: str, data: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        started = time.monotonic()
        if data:
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            received += f"[{type(exc).__name__}]".encode()
        closed = time.monotonic() - started
        sock.close()
        results[name] = {"closed_after_s": closed, "answer": received.split(b"\r\n", 1)[0].decode("latin-1"),
                         "body": received.partition(b"\r\n\r\n")[2].decode("latin-1")}  # fmt: skip

    threads = [
        threading.Thread(target=hold, args=("partial headers", b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n")),
        threading.Thread(target=hold, args=("nothing sent", b"")),
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(70)
    for name, r in results.items():
        print(
            f"partial: {name}: closed after {r['closed_after_s']:.2f} s, {r['answer']!r} {r['body']!r}",
            flush=True,
        )
    return results


def grpc_slow_call(target: str, seconds: float, model: str, out: dict[str, Any]) -> None:
    message = pb.ModelInferRequest(model_name=model)
    tensor = message.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend([1, 1])
    message.raw_input_contents.append(np.array([[seconds]], np.float32).tobytes())
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            INFER,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            call(message, timeout=60)
            out["code"] = "OK"
        except grpc.RpcError as exc:
            out["code"], out["details"] = exc.code().name, exc.details()
    out["at"] = time.monotonic()


def http_slow_call(port: int, seconds: float, out: dict[str, Any]) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [seconds]}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v2/models/slow/infer", json.dumps(doc), {"Content-Type": "application/json"})
        response = conn.getresponse()
        out["status"], out["type"] = response.status, response.getheader("content-type")
        out["body"] = response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        out["status"], out["body"] = type(exc).__name__, str(exc)
    finally:
        conn.close()
    out["at"] = time.monotonic()


def ready_status(port: int) -> str:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v2/health/ready")
        status = str(conn.getresponse().status)
        conn.close()
        return status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def scenario_shutdown(call_s: float, tmp: Path) -> dict[str, Any]:
    begun = CallsBegun(tmp / f"begun-{call_s:g}")
    grpc_port = free_port()
    server = Server(
        slow_repo(tmp / f"slow-repo-{call_s:g}"),
        {"SLOW_FIFO": str(begun.path)},
        ["--grpc-port", str(grpc_port), "--python-models", "--startup-load", "all", "--log-level", "warning"],
    )
    port = int(server.url.rsplit(":", 1)[1])
    gtarget = f"127.0.0.1:{grpc_port}"
    try:
        calls: list[dict[str, Any]] = [{}, {}]
        threads = [
            threading.Thread(target=http_slow_call, args=(port, call_s, calls[0])),
            threading.Thread(target=grpc_slow_call, args=(gtarget, call_s, "slow", calls[1])),
        ]
        for t in threads:
            t.start()
        running = begun.wait(2, timeout_s=30)
        term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        ready = "200"
        while ready == "200" and time.monotonic() - term < 5:
            ready = ready_status(port)
        ready_s = time.monotonic() - term
        refused: dict[str, Any] = {}
        attempts: list[str] = []
        while time.monotonic() - term < 10:
            attempt: dict[str, Any] = {}
            grpc_slow_call(
                gtarget, 0.0, "identity", attempt
            )  # a new channel; any answer but UNAVAILABLE: accepted
            attempts.append(attempt.get("code", "?"))
            if attempt.get("code") == "UNAVAILABLE":
                refused = {"after_s": attempt["at"] - term, "details": attempt.get("details")}
                break
            time.sleep(0.02)
        try:
            code = server.proc.wait(60)
        except Exception:
            code = None
        exit_s = time.monotonic() - term
        for t in threads:
            t.join(60)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        begun.close()
    http_call, grpc_call = calls
    out = {
        "call_s": call_s,
        "calls_running_at_sigterm": running,
        "ready_not_200_after_s": ready_s,
        "ready_then": ready,
        "grpc_new_call_attempts": attempts,
        "grpc_refused": refused,
        "exit_code": code,
        "exit_after_s": exit_s,
        "http_call": {k: (v - term if k == "at" else v) for k, v in http_call.items()},
        "grpc_call": {k: (v - term if k == "at" else v) for k, v in grpc_call.items()},
        "server": server.describe(),
    }
    print(f"shutdown with {call_s:g} s calls: {json.dumps(out, indent=1)}", flush=True)
    return out


def scenario_decode(a: argparse.Namespace) -> list[dict[str, float]]:
    from modelfleet.protocol.rest import Limits, decode_request

    body = big_elements(DEFAULT_MAX_BODY, nested=a.nested)[1]

    async def one() -> dict[str, float]:
        gaps: list[float] = []
        done = False

        async def beat() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(beat())
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await asyncio.to_thread(decode_request, body, None, Limits())
        took = time.perf_counter() - started
        await asyncio.sleep(0.1)
        done = True
        await task
        return {"decode_s": took, "longest_gap_ms": max(gaps) * 1e3}

    runs = []
    for r in range(a.rounds):
        runs.append(asyncio.run(one()))
        print(f"decode round {r + 1}: {runs[-1]}", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help="bytes, json, partial, shutdown (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of bytes and json")
    parser.add_argument("--attack-s", type=float, default=5.0, help="seconds of each BYTES flood")
    parser.add_argument("--connections", type=int, default=32, help="parallel senders of the BYTES flood")
    parser.add_argument("--json-answer", nargs="+", default=["json", "binary"], choices=["json", "binary"],
                        help="how the 64 MiB JSON request asks its answer (binary_data_output)")  # fmt: skip
    parser.add_argument("--call-s", type=float, nargs="+", default=[25.0, 40.0], help="slow calls' seconds")
    parser.add_argument(
        "--nested", action="store_true", help="json and decode: data nested [[...]] as its shape"
    )
    parser.add_argument("--json", type=Path, help="write every figure here too")
    a = parser.parse_args()
    a.scenarios = a.scenarios or list(SCENARIOS)
    if not set(a.scenarios) <= set(SCENARIOS):
        parser.error(f"scenarios are {', '.join(SCENARIOS)}")
    print(f"machine: {machine()}", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mfhostile-") as tmp_name:
        tmp = Path(tmp_name)
        if {"bytes", "json", "partial"} & set(a.scenarios):
            elements = big_elements(DEFAULT_MAX_BODY)[0]
            grpc_port = free_port()
            args = ["--grpc-port", str(grpc_port), "--startup-load", "all", "--log-level", "warning"]
            server = Server(build_repo(tmp / "repo", elements), {}, args)
            print(f"server (default limits): {server.describe()}", flush=True)
            try:
                if "bytes" in a.scenarios:
                    results["bytes"] = scenario_bytes(server, grpc_port, a)
                if "json" in a.scenarios:
                    results["json"] = scenario_json(server, a)
                if "partial" in a.scenarios:
                    results["partial"] = scenario_partial(server)
                results["server_alive_after"] = server.proc.poll() is None
            finally:
                server.stop()
        if "shutdown" in a.scenarios:
            results["shutdown"] = [scenario_shutdown(s, tmp) for s in a.call_s]
        if "decode" in a.scenarios:
            results["decode"] = scenario_decode(a)
    summarize(results)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))


def summarize(results: dict[str, Any]) -> None:
    print(f"\n=== summary ({machine()})")
    if "bytes" in results:
        for front in ("http", "grpc"):
            runs = [r for r in results["bytes"] if f"/{front} " in r["name"]]
            live = [r["live_during"].get("max_ms", float("nan")) for r in runs]
            growth = [r["rss"]["growth_mib"] for r in runs]
            answers = Counter[str]()
            for r in runs:
                answers.update(r["answers"])
            ok = max(live) < 250 and max(growth) < 64 and set(answers) <= {"400", "INVALID_ARGUMENT"}
            print(
                f"bytes/{front}: answers {dict(answers)}; liveness max per round {[round(x) for x in live]} ms "
                f"(median {statistics.median(live):.0f}); RSS growth per round {[round(g, 1) for g in growth]} MiB "
                f"-> {'meets' if ok else 'MISSES'} (400, < 250 ms, < 64 MiB)"
            )
    for kind in ("json", "binary"):
        runs = [r for r in results.get("json", []) if r["answer_kind"] == kind]
        if not runs:
            continue
        live = [r["live_during"].get("max_ms", float("nan")) for r in runs]
        growth = [r["rss"]["growth_mib"] for r in runs]
        print(
            f"json 64 MiB, {kind} answer: statuses {[r['status'] for r in runs]}; answered after "
            f"{[round(r['total_s'], 2) for r in runs]} s; liveness max per round {[round(x) for x in live]} ms "
            f"(median {statistics.median(live):.0f}, target < 200); RSS peak growth {[round(g) for g in growth]} MiB "
            f"-> {'meets' if max(live) < 200 else 'MISSES'}"
        )
    if "partial" in results:
        for name, r in results["partial"].items():
            verdict = "meets" if r["closed_after_s"] < 35 else "MISSES"
            print(
                f"partial, {name}: closed after {r['closed_after_s']:.2f} s with {r['answer']!r} -> {verdict} (< 35 s)"
            )
    if "decode" in results:
        runs = results["decode"]
        print(
            f"decode of the 64 MiB JSON body on a thread (in process): {[round(r['decode_s'], 2) for r in runs]} s; "
            f"longest event-loop gap meanwhile {[round(r['longest_gap_ms']) for r in runs]} ms"
        )
    for r in results.get("shutdown", []):
        refused = r["grpc_refused"].get("after_s")
        http_json = str(r["http_call"].get("type", "")).startswith("application/json")
        ok = (
            refused is not None
            and refused < 2
            and r["exit_code"] == 0
            and r["exit_after_s"] < 30
            and http_json
        )
        print(
            f"shutdown, {r['call_s']:g} s calls: ready {r['ready_then']} after {r['ready_not_200_after_s']:.2f} s; "
            f"new gRPC call refused after {refused if refused is None else round(refused, 2)} s; exit "
            f"{r['exit_code']} after {r['exit_after_s']:.2f} s; HTTP call {r['http_call'].get('status')} "
            f"{r['http_call'].get('type')} {r['http_call'].get('body')!r:.100} at {r['http_call'].get('at', 0):.2f} s; "
            f"gRPC call {r['grpc_call'].get('code')} at {r['grpc_call'].get('at', 0):.2f} s -> "
            f"{'meets' if ok else 'MISSES'}"
        )


if __name__ == "__main__":
    main()
