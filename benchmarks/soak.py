"""Issue 16 item 7: a soak of `modelfleet serve`: many load/evict cycles, then many inferences, with
the server's memory sampled after warm-up and at the end (target: within 5 % after warm-up).

1. Cycles (`--cycles`, 10,000): over `--models` tiny identity models (tests/models.py), each cycle
   is `POST /v2/repository/models/M/load`, one inference of M, `POST .../M/unload` (an explicit
   unload evicts at once), M walking round robin; `--cycle-clients` such loops side by side on
   distinct models. RSS (VmRSS) every `--sample-every` cycles; the first `--warmup-fraction` of
   the cycles is the warm-up.
2. Inferences (`--inferences`, 1,000,000): closed loop of the project's load generator
   (`modelfleet bench -c N`, binary encoding) over every model, in chunks of `--chunk-s` seconds
   until the count is reached, RSS after each chunk; the chunks covering the first
   `--warmup-fraction` of the inferences are the warm-up.

    python benchmarks/soak.py                                       # 10,000 cycles, 1,000,000 inferences
    python benchmarks/soak.py --cycles 2000 --inferences 200000     # shorter
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.models: the tests' tiny models
from overload import Server, machine, rss_bytes
from tests.models import identity

MiB = 1 << 20
TARGET = 0.05
INFER_BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def post(conn: http.client.HTTPConnection, path: str, body: str = "{}") -> tuple[int, bytes]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def cycles(server: Server, models: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """`a.cycles` load / infer / unload cycles, spread over `a.cycle_clients` threads."""
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.proc.pid
    done = 0
    failures: dict[str, int] = {}
    lock = threading.Lock()
    samples: list[tuple[int, float, int]] = []  # (cycles done, seconds, rss)
    started = time.monotonic()
    next_sample = 0
    per_client = [models[i :: a.cycle_clients] for i in range(a.cycle_clients)]

    def client(own: list[str], count: int, bar: Progress, task: Any) -> None:
        nonlocal done, next_sample
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(count):
            model = own[i % len(own)]
            steps = (
                (f"/v2/repository/models/{model}/load", "{}"),
                *(((f"/v2/models/{model}/infer", INFER_BODY),) if a.infer_in_cycle else ()),
                (f"/v2/repository/models/{model}/unload", "{}"),
            )
            for path, body in steps:
                try:
                    status, text = post(conn, path, body)
                except (OSError, http.client.HTTPException) as exc:
                    status, text = -1, str(exc).encode()
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                if status != 200:
                    with lock:
                        key = f"{path.rsplit('/', 1)[1]} {status}"
                        failures[key] = failures.get(key, 0) + 1
                        if failures[key] == 1:
                            bar.console.print(f"{key}: {text[:200]!r}")
            with lock:
                done += 1
                if done >= next_sample:
                    rss = rss_bytes(pid) or 0
                    samples.append((done, time.monotonic() - started, rss))
                    next_sample += a.sample_every
                bar.update(task, completed=done, info=f"RSS {rss_mib(samples[-1][2])}")
        conn.close()

    shares = [a.cycles // a.cycle_clients + (i < a.cycles % a.cycle_clients) for i in range(a.cycle_clients)]
    with progress_bar() as bar:
        task = bar.add_task("load/infer/unload cycles", total=a.cycles, info="")
        threads = [
            threading.Thread(target=client, args=(own, n, bar, task))
            for own, n in zip(per_client, shares, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elapsed = time.monotonic() - started
    samples.append((done, elapsed, rss_bytes(pid) or 0))
    return {"cycles": done, "seconds": elapsed, "failures": failures, "rss": samples}


def rss_mib(value: int) -> str:
    return f"{value / MiB:.1f} MiB"


def inferences(server: Server, models: list[str], a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Closed-loop `modelfleet bench` chunks until `a.inferences` are answered."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=60)
    for model in models:  # the cycles left every model unloaded (an explicit unload keeps it out)
        status, text = post(conn, f"/v2/repository/models/{model}/load")
        if status != 200:
            raise SystemExit(f"load {model}: {status} {text[:200]!r}")
    conn.close()
    pid = server.proc.pid
    total = errors = 0
    chunks: list[dict[str, Any]] = []
    started = time.monotonic()
    report = tmp / "chunk.json"
    command = [
        sys.executable, "-m", "modelfleet", "bench", "--url", server.url, "-m", ",".join(models),
        "--encoding", "binary", "-c", str(a.concurrency), "-d", str(a.chunk_s), "--warmup", "0",
        "--report", str(report), "--no-fail-on-error",
    ]  # fmt: skip
    print("$ " + " ".join(command[1:]).replace(str(report), "CHUNK.json") + "   # repeated", flush=True)
    with progress_bar() as bar:
        task = bar.add_task("inferences", total=a.inferences, info="")
        while total < a.inferences:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            doc = json.loads(report.read_text())
            total += int(doc["requests"])
            errors += int(doc["errors"]["total"])
            rss = rss_bytes(pid) or 0
            chunks.append(
                {"done": total, "seconds": time.monotonic() - started, "rss": rss, "per_s": doc["requests_per_s"],
                 "p99_ms": doc["latency_ms"]["p99"], "errors": doc["errors"]["total"]}
            )  # fmt: skip
            bar.update(task, completed=min(total, a.inferences),
                       info=f"{doc['requests_per_s']:.0f}/s, RSS {rss_mib(rss)}, errors {errors}")  # fmt: skip
    return {"inferences": total, "errors": errors, "seconds": time.monotonic() - started, "chunks": chunks}


def verdict(after_warmup: int, end: int) -> str:
    change = (end - after_warmup) / after_warmup
    ok = abs(change) <= TARGET
    return f"{rss_mib(after_warmup)} -> {rss_mib(end)} ({change:+.1%}; target within {TARGET:.0%}: {'meets' if ok else 'MISSES'})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--inferences", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=8, help="tiny identity models")
    parser.add_argument("--infer-in-cycle", action=argparse.BooleanOptionalAction, default=True,
                        help="one inference of the model between its load and its unload")  # fmt: skip
    parser.add_argument("--cycle-clients", type=int, default=2, help="load/unload loops side by side")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--chunk-s", type=float, default=20.0, help="seconds per modelfleet bench chunk")
    parser.add_argument("--sample-every", type=int, default=250, help="cycles between RSS samples")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--json", type=Path, help="write every figure here too")
    a = parser.parse_args()
    if a.models < a.cycle_clients:
        raise SystemExit("--models must be at least --cycle-clients")
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mfsoak-") as tmp_name:
        tmp = Path(tmp_name)
        names = [f"m{i:02d}" for i in range(a.models)]
        for name in names:
            identity(tmp / "repo" / name / "1" / "model.onnx")
        server = Server(tmp / "repo", {}, ["--startup-load", "none", "--log-level", "warning"])
        print(
            f"server: {server.describe()}; RSS at start {rss_mib(rss_bytes(server.proc.pid) or 0)}",
            flush=True,
        )
        results: dict[str, Any] = {"server": server.describe(), "machine": machine()}
        try:
            if a.cycles:
                results["cycles"] = cycles(server, names, a)
            if a.inferences:
                results["inferences"] = inferences(server, names, a, tmp)
            results["alive"] = server.proc.poll() is None
        finally:
            server.stop()
    print(f"\n=== summary ({machine()})")
    if "cycles" in results:
        c = results["cycles"]
        rss = c["rss"]
        warm = next(r for n, _, r in rss if n >= a.warmup_fraction * c["cycles"])
        print(
            f"cycles: {c['cycles']} load/infer/unload in {c['seconds']:.0f} s ({c['cycles'] / c['seconds']:.1f}/s), "
            f"failures {c['failures'] or 0}; RSS first sample {rss_mib(rss[0][2])}, after warm-up "
            f"({a.warmup_fraction:.0%}) vs end: {verdict(warm, rss[-1][2])}; min {rss_mib(min(r for *_, r in rss))}, "
            f"max {rss_mib(max(r for *_, r in rss))}"
        )
        shown = dict.fromkeys([*range(0, len(rss), max(1, len(rss) // 10)), len(rss) - 1])
        print("  RSS MiB by cycles: " + ", ".join(f"{rss[k][0]}: {rss[k][2] / MiB:.1f}" for k in shown))
    if "inferences" in results:
        i = results["inferences"]
        chunks = i["chunks"]
        warm = next(c["rss"] for c in chunks if c["done"] >= a.warmup_fraction * a.inferences)
        print(
            f"inferences: {i['inferences']} in {i['seconds']:.0f} s ({i['inferences'] / i['seconds']:.0f}/s incl. "
            f"bench start-ups), errors {i['errors']}; RSS after warm-up vs end: {verdict(warm, chunks[-1]['rss'])}; "
            f"min {rss_mib(min(c['rss'] for c in chunks))}, max {rss_mib(max(c['rss'] for c in chunks))}"
        )
        print(
            "  by chunk (done: req/s, P99 ms, RSS MiB): "
            + ", ".join(
                f"{c['done']}: {c['per_s']:.0f}, {c['p99_ms']:.1f}, {c['rss'] / MiB:.1f}" for c in chunks
            )
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
