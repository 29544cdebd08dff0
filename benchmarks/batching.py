"""Issue 4 benchmark: what batching and instances bring on this machine, against the in-process limit.

For each sequence length: the in-process compute limit (ONNX Runtime called directly, all cores,
the best of several batch sizes, in rows per second), then `modelfleet serve` with each variant of
the scheduling config (a copy of the model's folder with that config.yaml), closed loop at
concurrency C with `modelfleet bench`; and at concurrency 1, batching on against off (P50).

    python benchmarks/batching.py --repo /tmp/demo --model minilm-sentiment --seqs 32 128 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from many_models import Server, machine

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults (no scheduling config)": {},
    "batching (delay 0), 1 instance": {
        "dynamic_batching": {"enabled": True, "max_queue_delay_us": 0},
        "instances": 1,
    },
    "batching (delay 2 ms), 1 instance": {
        "dynamic_batching": {"enabled": True, "max_queue_delay_us": 2000},
        "instances": 1,
    },
    "no batching": {"dynamic_batching": {"enabled": False}, "instances": 1},
    "2 instances, 1 thread each": {
        "dynamic_batching": {"enabled": False},
        "instances": 2,
        "onnxruntime": {"intra_op_threads": 1},
    },
    "2 instances + batching, 1 thread each": {
        "dynamic_batching": {"enabled": True},
        "instances": 2,
        "onnxruntime": {"intra_op_threads": 1},
    },
}


def in_process_limit(model_file: Path, seq: int, seconds: float) -> tuple[float, int, dict[int, float]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rates = {}
    for batch in (1, 2, 4, 8, 16, 32):
        feeds = {
            "input_ids": rng.integers(1000, 20000, (batch, seq)).astype(np.int64),
            "attention_mask": np.ones((batch, seq), np.int64),
        }
        for _ in range(3):
            session.run(None, feeds)
        runs, end = 0, time.perf_counter() + seconds / 6
        start = time.perf_counter()
        while time.perf_counter() < end:
            session.run(None, feeds)
            runs += 1
        rates[batch] = runs * batch / (time.perf_counter() - start)
    best = max(rates, key=lambda b: rates[b])
    return rates[best], best, rates


def repo_with(source: Path, model: str, overrides: dict[str, Any], into: Path) -> Path:
    """A repository holding only `model`, its config.yaml updated with `overrides`."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    shutil.copytree(source / model, into / model, copy_function=os.link)
    config_path = into / model / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) or {}
    config.update(overrides)
    config.pop("pinned", None)
    config_path.unlink()  # a hard link: write a new file, not through it
    config_path.write_text(yaml.safe_dump(config))
    return into


def run_bench(url: str, model: str, seq: int, concurrency: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [sys.executable, "-m", "modelfleet", "bench", "--url", url, "-m", model, "-c", str(concurrency),
             "-d", str(seconds), "--warmup", "3", "--encoding", "binary", "--no-fail-on-error",
             f"--shape=input_ids=1,{seq}", f"--shape=attention_mask=1,{seq}", "--report", report.name],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return dict(json.loads(Path(report.name).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, default=Path("/tmp/demo"))
    parser.add_argument("--model", default="minilm-sentiment")
    parser.add_argument("--seqs", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    a = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="batching-"))
    model_file = a.repo / a.model / "1" / "model.onnx"
    for seq in a.seqs:
        limit, best, rates = in_process_limit(model_file, seq, a.seconds)
        shown = ", ".join(f"b{b} {r:.0f}" for b, r in rates.items())
        print(
            f"seq {seq}: in-process limit {limit:.1f} rows/s at batch {best} ({shown}; batch-1 = {rates[1]:.1f})"
        )
        for name in a.variants:
            repo = repo_with(a.repo, a.model, VARIANTS[name], work / "repo")
            server = Server(repo, "--startup-load", "all")
            try:
                report = run_bench(server.url, a.model, seq, a.concurrency, a.seconds)
                stats = server.get(f"/v2/models/{a.model}/stats")["model_stats"][0]
            finally:
                server.stop()
            batches = {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}
            mean_batch = sum(size * n for size, n in batches.items()) / max(1, sum(batches.values()))
            rps, lat = report["requests_per_s"], report["latency_ms"]
            print(
                f"  {name:40s} c={a.concurrency}: {rps:7.1f} req/s = {100 * rps / limit:5.1f} % of the limit, "
                f"P50 {lat['p50']:.1f} ms, P99 {lat['p99']:.1f} ms, mean batch {mean_batch:.1f}, "
                f"errors {report['errors']['total']}"
            )
        for name in (
            "no batching",
            "batching (delay 0), 1 instance",
            "batching (delay 2 ms), 1 instance",
            "defaults (no scheduling config)",
        ):
            repo = repo_with(a.repo, a.model, VARIANTS[name], work / "repo")
            server = Server(repo, "--startup-load", "all")
            try:
                p50s = [
                    run_bench(server.url, a.model, seq, 1, a.seconds / 2)["latency_ms"]["p50"]
                    for _ in range(3)
                ]
            finally:
                server.stop()
            print(
                f"  c=1 {name:36s} P50 {statistics.median(p50s):.3f} ms (runs {', '.join(f'{p:.3f}' for p in p50s)})"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
