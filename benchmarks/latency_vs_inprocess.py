"""Server latency against the in-process limit: the same ONNX model, the same input, the same run.

For each round: time `InferenceSession.run` in this process (same session options as the server),
then `modelfleet bench -c 1` against `modelfleet serve` with the same request; report both P50s
and the difference. Rounds alternate so that machine noise hits both sides alike.

    python benchmarks/latency_vs_inprocess.py --repo demo-repo --model minilm-sentiment --seq 128
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_body(seq: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    ids = [101, *rng.integers(1000, 20000, seq - 2).tolist(), 102]
    return {
        "inputs": [
            {"name": "input_ids", "shape": [1, seq], "datatype": "INT64", "data": ids},
            {"name": "attention_mask", "shape": [1, seq], "datatype": "INT64", "data": [1] * seq},
        ]
    }


def in_process_p50_ms(model_file: Path, body: dict[str, object], threads: int, seconds: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    feeds = {
        t["name"]: np.array(t["data"], dtype=np.int64).reshape(t["shape"])  # type: ignore[index]
        for t in body["inputs"]  # type: ignore[attr-defined]
    }
    for _ in range(20):
        session.run(None, feeds)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        times.append(time.perf_counter_ns() - t0)
    del session
    return statistics.median(times) / 1e6


def server_p50_ms(url: str, model: str, body_file: Path, seconds: float, encoding: str) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [sys.executable, "-m", "modelfleet", "bench", "--url", url, "-m", model, "-c", "1",
             "-d", str(seconds), "--warmup", "1", "--input-file", str(body_file), "--encoding", encoding,
             "--report", report.name],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        doc = json.loads(Path(report.name).read_text())
    return float(doc["latency_ms"]["p50"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=Path("demo-repo"))
    parser.add_argument("--model", default="minilm-sentiment")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads, both sides (0: ORT's choice)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--encoding", choices=["json", "binary"], default="json")
    args = parser.parse_args()

    body = request_body(args.seq)
    model_file = args.repo / args.model / "1" / "model.onnx"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "modelfleet", "serve", str(args.repo), "--port", str(port), "--grpc-port", "0",
         "--intra-op-threads", str(args.threads), "--log-level", "warning"],
        env={**os.environ, "MODELFLEET_STARTUP_LOAD": "none"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start") from None
                time.sleep(0.2)
        urllib.request.urlopen(
            urllib.request.Request(f"{url}/v2/repository/models/{args.model}/load", b"{}")
        ).close()
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(body, f)
        local, served = [], []
        for round_ in range(args.rounds):
            local.append(in_process_p50_ms(model_file, body, args.threads, args.seconds))
            served.append(server_p50_ms(url, args.model, Path(f.name), args.seconds, args.encoding))
            print(f"round {round_ + 1}: in-process P50 {local[-1]:.3f} ms, server P50 {served[-1]:.3f} ms")
        a, b = statistics.median(local), statistics.median(served)
        print(
            f"{args.model} seq {args.seq} batch 1, intra-op threads {args.threads or 'ORT default'}, "
            f"{args.encoding}: in-process P50 {a:.3f} ms, server P50 {b:.3f} ms, difference {b - a:+.3f} ms "
            f"(medians of {args.rounds} rounds of {args.seconds:g} s)"
        )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
