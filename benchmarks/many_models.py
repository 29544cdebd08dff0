"""Issue 3 benchmarks: many tenants on one node. Each subcommand prints its figures and the machine.

zipf        3,000 adapter tenants, Zipf(s) popularity, closed loop; then the same load to one
            tenant, each on a fresh server: throughput ratio, P90, errors, cold starts.
cold-start  in-process ModelManager: load times of adapter tenants (P50), of full-copy tenants
            against a bare ONNX Runtime session with shared initializers measured in the same
            run, and the first load against reading its files plus creating one session.
density     resident memory of N adapter tenants, and of N full-copy tenants, beyond the first.
churn       uniform traffic over many non-shared models with a budget that holds 100 of them:
            server RSS sampled every second against budget + fixed overhead.

  python benchmarks/many_models.py zipf --repo /tmp/tenants --tenants 3000 --duration 120 --warmup 30
  python benchmarks/many_models.py cold-start --repo /tmp/tenants --full-repo /tmp/full --count 200
  python benchmarks/many_models.py density --repo /tmp/tenants --full-repo /tmp/full --count 1000
  python benchmarks/many_models.py churn --models 3000 --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
LOOP = asyncio.new_event_loop()  # one loop for the in-process managers of a run


def run(coro: Any) -> Any:
    return LOOP.run_until_complete(coro)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, {cpu}, loadavg {' '.join(load)}, {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`modelfleet serve` in a subprocess, ready when /v2/health/ready answers 200."""

    def __init__(self, repo: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="modelfleet-", suffix=".log")[1])
        command = [sys.executable, "-m", "modelfleet", "serve", str(repo), "--port", str(self.port), "--grpc-port", "0",
                   "--log-level", "warning", *args]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("server not ready after 120 s")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: bytes = b"{}") -> Any:
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}{path}", body), timeout=300) as r:
            return json.loads(r.read() or b"null")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def bench(url: str, *args: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run(
            [sys.executable, "-m", "modelfleet", "bench", "--url", url, "--report", report.name,
             "--no-fail-on-error", *args],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return dict(json.loads(Path(report.name).read_text()))


def ensure_repo(path: Path, tenants: int, full_copies: bool) -> None:
    marker = path / f"tenant-{tenants:05d}"
    if marker.is_dir():
        return
    args = [sys.executable, "-m", "modelfleet", "demo-repo", str(path), "--tenants", str(tenants)]
    subprocess.run([*args, "--full-copies"] if full_copies else args, check=True)


# -- zipf ---------------------------------------------------------------------------------------------


def cmd_zipf(a: argparse.Namespace) -> None:
    ensure_repo(a.repo, a.tenants, full_copies=False)
    shape = [f"--shape=input_ids=1,{a.seq}", f"--shape=attention_mask=1,{a.seq}"]
    common = [
        "-c",
        str(a.concurrency),
        "-d",
        str(a.duration),
        "--warmup",
        str(a.warmup),
        "--encoding",
        "binary",
        *shape,
    ]
    print(machine())
    results = {}
    for label, target in (
        ("zipf", ["--model-pattern", "tenant-{i:05d}", "--model-start", "1", "--model-count", str(a.tenants),
                  "--popularity", "zipf", "--zipf-s", str(a.zipf_s)]),
        ("one", ["-m", "tenant-00001"]),
    ):  # fmt: skip
        server = Server(a.repo, *a.server_args)
        try:
            report = bench(server.url, *target, *common)
            memory = server.get("/v2/models/stats")["memory"]
        finally:
            server.stop()
        results[label] = report
        lat = report["latency_ms"]
        print(
            f"{label}: {report['requests_per_s']:.1f} req/s, P50 {lat['p50']:.1f} ms, P90 {lat['p90']:.1f} ms, "
            f"P99 {lat['p99']:.1f} ms, errors {report['errors']['total']} (+{report['warmup_errors']} in warm-up), "
            f"models hit {report['models']['hit']} of {report['models']['count']}, cold starts {memory['cold_starts']}, "
            f"resident {memory['resident_models']}"
        )
    ratio = results["zipf"]["requests_per_s"] / results["one"]["requests_per_s"]
    print(f"zipf / one model throughput: {ratio:.3f}")


# -- cold start and density (in-process manager) -------------------------------------------------------


def manager_for(repo: Path, budget: str = "16GiB") -> Any:
    from modelfleet.config import ServerSettings, StartupLoad
    from modelfleet.engine.lifecycle import ModelManager
    from modelfleet.repository.folder import FolderRepository

    settings = ServerSettings(repository=repo, startup_load=StartupLoad.NONE, memory_budget=budget)
    manager = ModelManager(FolderRepository(repo), settings)
    run(manager.start())
    return manager


def load_times(manager: Any, names: list[str]) -> list[float]:
    async def acquire_all() -> list[float]:
        times = []
        for name in names:
            await manager.acquire(name)
            times.append(manager.record(name).counters.last_load_s)
        return times

    return run(acquire_all())


def bare_session_times(repo: Path, names: list[str], prepacking: bool) -> tuple[list[float], float]:
    """ONNX Runtime sessions with the blobs supplied as shared initializers; the first one's time
    includes reading its files (model.onnx and every blob) from disk."""
    import onnxruntime as ort

    from modelfleet.repository.folder import FolderRepository
    from modelfleet.repository.weights import open_blob

    folder = FolderRepository(repo)
    arrays: dict[str, np.ndarray] = {}
    times, first = [], 0.0
    for i, name in enumerate(names):
        source = folder.fetch(name)
        started = time.perf_counter()
        if i == 0:
            for path in [source.model_file(1), *source.blobs.values()]:
                path.read_bytes()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if not prepacking:
            so.add_session_config_entry("session.disable_prepacking", "1")
        keep = []
        for tensor, ref in source.weights[1].tensors.items():
            array = arrays.get(ref.blob)
            if array is None:
                array = arrays[ref.blob] = open_blob(source.blobs[ref.blob], ref)
            value = ort.OrtValue.ortvalue_from_numpy(array)
            so.add_initializer(tensor, value)
            keep.append(value)
        session = ort.InferenceSession(str(source.model_file(1)), so, providers=["CPUExecutionProvider"])
        elapsed = time.perf_counter() - started
        if i == 0:
            first = elapsed
        else:
            times.append(elapsed)
        del session, keep
    return times, first


def cmd_cold_start(a: argparse.Namespace) -> None:
    ensure_repo(a.repo, a.count, full_copies=False)
    ensure_repo(a.full_repo, a.count, full_copies=True)
    print(machine())
    names = [f"tenant-{i:05d}" for i in range(1, a.count + 1)]
    manager = manager_for(a.repo)
    load_times(manager, ["minilm-base"])
    heads = load_times(manager, names)
    print(
        f"adapter tenants: P50 load {statistics.median(heads) * 1e3:.2f} ms, P90 {np.percentile(heads, 90) * 1e3:.2f} ms over {len(heads)}"
    )
    run(manager.close())

    bare, bare_first = bare_session_times(a.full_repo, names[: min(len(names), 50)], prepacking=False)
    manager = manager_for(a.full_repo)
    full = load_times(manager, names)
    run(manager.close())
    p50_bare, p50_full = statistics.median(bare), statistics.median(full[1:])
    print(
        f"full copies: first load {full[0] * 1e3:.1f} ms vs read files + one session {bare_first * 1e3:.1f} ms = {full[0] / bare_first:.2f}x"
    )
    print(
        f"full copies, blobs resident: P50 load {p50_full * 1e3:.1f} ms vs bare ONNX Runtime session with shared initializers {p50_bare * 1e3:.1f} ms = {p50_full / p50_bare:.2f}x"
    )


def cmd_density(a: argparse.Namespace) -> None:
    from modelfleet.engine.memory import process_rss, release_free_memory

    print(machine())
    for repo, full in ((a.repo, False), (a.full_repo, True)):
        ensure_repo(repo, a.count, full_copies=full)
        names = [f"tenant-{i:05d}" for i in range(1, a.count + 1)]
        manager = manager_for(repo)
        load_times(manager, names[:1])
        release_free_memory()
        first = process_rss().total
        load_times(manager, names[1:])
        release_free_memory()
        after = process_rss().total
        kind = "full-copy" if full else "adapter"
        print(f"{kind} tenants: {a.count} resident, {(after - first) / MiB:.0f} MiB of RSS beyond the first "
              f"({(after - first) / max(1, a.count - 1) / 1024:.0f} KiB each); accounted {manager.residency.used_bytes / MiB:.0f} MiB")  # fmt: skip
        run(manager.close())


# -- churn ----------------------------------------------------------------------------------------------


def churn_repo(path: Path, models: int, megabytes: int) -> None:
    """`models` models that share nothing in memory: hard links of one model file (disk once)."""
    if (path / f"m{models - 1:05d}").is_dir():
        return
    from onnx import TensorProto, helper, numpy_helper, save

    n = megabytes * MiB // 4
    table = numpy_helper.from_array(np.arange(n, dtype=np.float32).reshape(n, 1), "W")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["W", "rows"], ["y"])], "table",
        [helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], [table],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    first = path / "m00000" / "1" / "model.onnx"
    first.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(first))
    for i in range(1, models):
        target = path / f"m{i:05d}" / "1" / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(first, target)


def cmd_churn(a: argparse.Namespace) -> None:
    churn_repo(a.repo, a.models, a.megabytes)
    print(machine())
    probe = Server(a.repo, "--startup-load", "none")
    try:
        probe.post("/v2/repository/models/m00000/load")
        size = probe.get("/v2/models/m00000/stats")["model_stats"][0]["residency"]["resident_bytes"]
    finally:
        probe.stop()
    budget = 100 * max(size, a.megabytes * MiB)
    server = Server(
        a.repo, "--startup-load", "none", "--memory-budget", str(budget), "--intra-op-threads", "1"
    )
    baseline = server.rss()
    samples: list[tuple[float, int]] = []
    load = subprocess.Popen(
        [sys.executable, "-m", "modelfleet", "bench", "--url", server.url, "--model-pattern", "m{i:05d}",
         "--model-count", str(a.models), "--popularity", "uniform", "-c", str(a.concurrency), "-d",
         str(a.duration), "--warmup", "0", "--shape", "rows=1", "--no-fail-on-error", "--report",
         str(a.report)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.monotonic()
    while load.poll() is None:
        samples.append((time.monotonic() - started, server.rss()))
        time.sleep(1)
    memory = server.get("/v2/models/stats")["memory"]
    server.stop()
    report = json.loads(a.report.read_text())
    at_minute = next((r for t, r in samples if t >= 60), samples[-1][1])
    end = samples[-1][1]
    print(
        f"one model: {size / MiB:.1f} MiB measured; budget {budget / MiB:.0f} MiB (100 models); RSS before load {baseline / MiB:.0f} MiB"
    )
    print(f"RSS: max {max(r for _, r in samples) / MiB:.0f} MiB, after 1 min {at_minute / MiB:.0f} MiB, at the end {end / MiB:.0f} MiB "
          f"({100 * (end - at_minute) / at_minute:+.1f} %); budget + RSS before load = {(budget + baseline) / MiB:.0f} MiB")  # fmt: skip
    print(f"load: {report['requests_per_s']:.1f} req/s, errors {report['errors']['total']}, loads {memory['loads']}, "
          f"evictions {memory['evictions']}, P50 {report['latency_ms']['p50']:.1f} ms, P99 {report['latency_ms']['p99']:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    z = sub.add_parser("zipf")
    z.add_argument("--repo", type=Path, default=Path("/tmp/modelfleet-tenants"))
    z.add_argument("--tenants", type=int, default=3000)
    z.add_argument("--zipf-s", type=float, default=1.1)
    z.add_argument("--concurrency", type=int, default=8)
    z.add_argument("--duration", type=float, default=120)
    z.add_argument("--warmup", type=float, default=30)
    z.add_argument("--seq", type=int, default=32)
    z.add_argument("--server-args", nargs=argparse.REMAINDER, default=[])
    for name in ("cold-start", "density"):
        c = sub.add_parser(name)
        c.add_argument("--repo", type=Path, default=Path("/tmp/modelfleet-tenants"))
        c.add_argument("--full-repo", type=Path, default=Path("/tmp/modelfleet-full"))
        c.add_argument("--count", type=int, default=1000)
    ch = sub.add_parser("churn")
    ch.add_argument("--repo", type=Path, default=Path("/tmp/modelfleet-churn"))
    ch.add_argument("--models", type=int, default=3000)
    ch.add_argument("--megabytes", type=int, default=4)
    ch.add_argument("--concurrency", type=int, default=8)
    ch.add_argument("--duration", type=float, default=600)
    ch.add_argument("--report", type=Path, default=Path(tempfile.gettempdir()) / "churn-report.json")
    a = parser.parse_args()
    {"zipf": cmd_zipf, "cold-start": cmd_cold_start, "density": cmd_density, "churn": cmd_churn}[a.command](a)


if __name__ == "__main__":
    main()
