"""Issue 15 item 4: the plan simulation against a real local cluster, at the same Zipf rates.

Plans examples/local-fleet/validate.yaml (the demo's 3,000 tenants on two one-core instances, its
catalog.yaml) and runs it with `modelfleet cluster up --pin`: two `modelfleet serve` processes, each
on a core of its own, behind nginx. Every tenant is loaded first (the simulation has no cold loads).
Then, on this machine:

  lone      a request alone: P50 of an open loop at 4 req/s through the front, and the server's own
            batch time for it (statistics): the difference is the time outside the batch (nginx, the
            event loop's reading and answering, the network): `overhead_ms`
  capacity  one server's throughput at concurrency 32 (batches of 16 back to back): reported only,
            batches cost less per request back to back than under open-loop traffic
  calibrate open loops at --calibrate-rate (100 req/s; several rates are pooled) through the front,
            --calibrate-seconds each; the servers' batch times by size (statistics) give a straight
            line: `service_ms` (one request) and `batch_item_ms` (each further request); to which
            the event loop's CPU per request on the same core (reading, decoding, answering: ~0.5 ms,
            from its thread's CPU time) is added, and taken off `overhead_ms`: on a one-core
            server it is the core's work as much as the batches are (docs/benchmarks.md, "Plan
            simulation, sixth pass"; the earlier passes' executor-only inputs are reported beside)
  rates     for each rate, an open loop (Poisson arrivals) through the front with Zipf 1.1 over the
            tenants, ranked so that popular tenants alternate between the two servers; and the
            simulation of the same plan, with those inputs, at the same rate and ranking. Predicted
            and measured P50/P90/P99, each server's busy fraction (its CPU time over the run) beside
            the simulated utilisation, the batches formed (measured and simulated), and what a probe
            saw on the cores (steal, other processes, the event loop's wait for its core).

A speedometer on each server's core times a fixed, cache-resident unit of work (a 128x128 float32
matmul, 100 times, single-threaded; ~5 ms every second, ~0.5 % of the core) in CPU time, throughout.
On this machine (a KVM guest) a core's speed changes by up to 2x for seconds to minutes with no steal
time: the host's contention on the physical core under the vCPU (docs/benchmarks.md, "Plan
simulation, fifth pass"). Each step reports each core's speed against the calibration step, and a
second simulation whose batch times on each server are scaled by that ratio (`speed_adjusted`):
what the model predicts for the speed the cores actually had. A third simulation takes each server's
batch line from the batches it ran in the step itself (`step_measured`): not a forecast, a check of
the model (queueing and batching) given the service times the cores had.

    modelfleet demo-repo /tmp/demo3k --tenants 3000
    python benchmarks/simulation_check.py --repo /tmp/demo3k --report /tmp/simcheck.json --plot /tmp/simcheck.png \
        --server-arg=--gil-switch-interval-us=500

`--keep-awake` runs a SCHED_IDLE spinner on each server's core for the whole check (the vCPU never
halts; see `keep_awake`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import cpu_s, modelfleet
from many_models import free_port, machine

from modelfleet.engine.building import CPU_MAX_ROWS
from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.simulate import plan_instances, simulate
from modelfleet.planner.spec import FleetSpec, load_fleet_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "local-fleet"
FLEET, CATALOG = EXAMPLE / "validate.yaml", EXAMPLE / "catalog.yaml"
SEQ = ["--seq-len", "32", "--same-signature"]
CAPACITY_CONCURRENCY = 32


def run_bench(url: str, load: list[str], seconds: float, warmup: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        modelfleet("bench", "--url", url, *load, *SEQ, "--duration", str(seconds), "--warmup", str(warmup),
                   "--report", report.name, "--no-fail-on-error")  # fmt: skip
        doc: dict[str, Any] = json.loads(Path(report.name).read_text())
    return doc


def preload(state: dict[str, Any]) -> None:
    """Load every planned model on its server (the simulation has no cold loads)."""
    jobs = [(s["port"], m) for s in state["servers"] for m in Path(s["models_file"]).read_text().split()]
    with httpx.Client(timeout=120, trust_env=False) as client, cf.ThreadPoolExecutor(4) as pool:

        def load(job: tuple[int, str]) -> int:
            url = f"http://{state['host']}:{job[0]}/v2/repository/models/{job[1]}/load"
            return client.post(url).status_code

        codes = list(pool.map(load, jobs))
    if set(codes) != {200}:
        raise SystemExit(f"preloading failed: {sorted(set(codes))}")


def alternating(plan: list[tuple[str, list[str], list[list[str]]]]) -> list[str]:
    """Every planned model once, taking one from each server in turn: Zipf rank 1 on the first
    server, rank 2 on the second, ... so that both servers carry load."""
    lists = [list(models) for _, models, _ in plan]
    out: list[str] = []
    for k in range(max(len(m) for m in lists)):
        out.extend(m[k] for m in lists if k < len(m))
    return out


def children_cpu_s() -> float:
    """CPU seconds of this script's finished children (each `modelfleet bench` run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Background:
    """A daemon thread running `_loop` (every `_period_s`, until `_stop` is set) for the length of a
    with-block."""

    def __init__(self, period_s: float, name: str) -> None:
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        raise NotImplementedError


class Probe(Background):
    """Samples, every `period_s`, each CPU's time (/proc/stat: busy, steal) and each server thread's
    time on a CPU and waiting for one (/proc/PID/task/TID/schedstat), in a thread of its own: who
    had the servers' cores, and how long their event loop (the main thread) waited to run."""

    def __init__(self, pids: list[int], period_s: float = 0.5) -> None:
        super().__init__(period_s, "probe")
        self._pids = pids
        self.samples: list[tuple[float, list[list[int]], list[dict[int, tuple[int, int, int]]]]] = []

    def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), per_cpu_jiffies(), [threads(p) for p in self._pids]))
            if self._stop.wait(self._period_s):
                self.samples.append((time.time(), per_cpu_jiffies(), [threads(p) for p in self._pids]))
                return

    def summary(self, start: float, end: float, cpus: list[int]) -> dict[str, Any]:
        """Between the samples nearest `start` and `end` (wall-clock seconds): per CPU its busy and
        stolen fractions; per server (pinned to cpus[i]) its main thread's (the event loop's) and
        other threads' CPU fraction and run-queue wait in ms per s, and the CPU others took on its core
        (the core's busy time less the server's); the worst second of each."""
        inside = [s for s in self.samples if start - 0.25 <= s[0] <= end + 0.25]
        if len(inside) < 2:
            return {}
        first, last = inside[0], inside[-1]
        out: dict[str, Any] = {"seconds": last[0] - first[0]}
        out["cpus"] = [cpu_share(a, b) for a, b in zip(first[1], last[1], strict=True)]
        out["servers"] = []
        for k, pid in enumerate(self._pids):
            whole = thread_share(pid, first[2][k], last[2][k], last[0] - first[0])
            steps = [
                thread_share(pid, a[2][k], b[2][k], b[0] - a[0])
                | {"cpu": cpu_share(a[1][cpus[k]], b[1][cpus[k]])}
                for a, b in itertools.pairwise(inside)
            ]
            core = out["cpus"][cpus[k]]
            whole["others_on_core"] = max(0.0, core["busy"] - whole["loop_cpu"] - whole["rest_cpu"])
            whole["worst_step"] = {
                "loop_wait_ms_per_s": max(s["loop_wait_ms_per_s"] for s in steps),
                "steal": max(s["cpu"]["steal"] for s in steps),
                "others_on_core": max(
                    max(0.0, s["cpu"]["busy"] - s["loop_cpu"] - s["rest_cpu"]) for s in steps
                ),
            }
            out["servers"].append(whole)
        return out


class Pinger(Background):
    """Asks each server for /v2/health/ready every `period_s` (one thread, keep-alive connections)
    and keeps each answer's time: a slow answer is an event loop that could not run (its core or
    the GIL held elsewhere), whatever the batches were doing."""

    def __init__(self, urls: list[str], period_s: float = 0.02) -> None:
        super().__init__(period_s, "pinger")
        self._urls = urls
        self.samples: list[list[tuple[float, float]]] = [[] for _ in urls]  # (sent at, ms)

    def _loop(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self._stop.wait(self._period_s):
                for k, url in enumerate(self._urls):
                    sent = time.time()
                    try:
                        client.get(f"{url}/v2/health/ready")
                    except httpx.HTTPError:
                        continue
                    self.samples[k].append((sent, (time.time() - sent) * 1e3))

    def summary(self, start: float, end: float) -> list[dict[str, float]]:
        """Per server: the answers' P50, P99 and worst (ms), and the share over 50 ms."""
        out = []
        for samples in self.samples:
            ms = np.array([m for t, m in samples if start <= t <= end])
            if ms.size == 0:
                out.append({})
                continue
            p50, p99 = np.percentile(ms, [50, 99]).tolist()
            out.append(
                {
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "max_ms": float(ms.max()),
                    "over_50ms": float((ms > 50).mean()),
                }
            )
        return out


SPEED_UNIT = """
import os, sys, time
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
os.sched_setaffinity(0, {int(sys.argv[1])})
period, reps = float(sys.argv[2]), int(sys.argv[3])
a = np.random.default_rng(1).standard_normal((128, 128), dtype=np.float32)
b, c = a.T.copy(), np.empty_like(a)
for _ in range(reps):
    np.matmul(a, b, out=c)
while True:
    t0 = time.thread_time()
    for _ in range(reps):
        np.matmul(a, b, out=c)
    print(f"{time.time():.3f} {(time.thread_time() - t0) * 1e3:.4f}", flush=True)
    time.sleep(period)
"""


KEEP_AWAKE = """
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
try:  # its own session's autogroup, at the lowest weight (else that group competes as a nice-0 task)
    with open("/proc/self/autogroup", "w") as f:
        f.write("19")
except OSError:
    pass
while True:
    pass
"""


def keep_awake(cpus: list[int]) -> list[subprocess.Popen[bytes]]:
    """On each of `cpus`, a SCHED_IDLE process that spins: it runs only when nothing else would, so
    the vCPU never halts (the host sees it busy). Measured here: a vCPU that halts between batches is
    found slower afterwards, up to 2x for seconds (docs/benchmarks.md, "Plan simulation, fifth pass").
    Each runs in a session of its own, whose autogroup it sets to nice 19: with autogroups on, the
    servers (`cluster up` starts each in its own session) compete with the spinner's group, not with
    the spinner, and a nice-0 group would take half of a server's core."""
    return [
        subprocess.Popen([sys.executable, "-c", KEEP_AWAKE, str(cpu)], start_new_session=True) for cpu in cpus
    ]


class Speedometer:
    """On each of `cpus`, a process pinned to it timing a fixed cache-resident unit of work
    (SPEED_UNIT) in CPU time every `period_s`: the core's speed, whoever else runs on it. A unit
    that takes longer in CPU time is a slower core (the host's contention on the physical core,
    invisible as steal), not a busier one."""

    def __init__(self, cpus: list[int], period_s: float = 1.0, reps: int = 100) -> None:
        self.samples: list[list[tuple[float, float]]] = [[] for _ in cpus]
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-c", SPEED_UNIT, str(cpu), str(period_s), str(reps)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for cpu in cpus
        ]
        self._readers = [
            threading.Thread(target=self._read, args=(k,), name=f"speed{k}", daemon=True)
            for k in range(len(cpus))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, k: int) -> None:
        stdout = self._procs[k].stdout
        assert stdout is not None
        for line in stdout:
            at, ms = line.split()
            self.samples[k].append((float(at), float(ms)))

    def unit_ms(self, start: float, end: float) -> list[float | None]:
        """Per core, the median CPU ms of the units run between `start` and `end`."""
        out: list[float | None] = []
        for samples in self.samples:
            inside = [ms for at, ms in samples if start <= at <= end]
            out.append(statistics.median(inside) if inside else None)
        return out

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(5)


def per_server(
    spec_doc: dict[str, Any], lines: list[tuple[float, float]], overhead_ms: float, simulate_plan: Any
) -> dict[str, float]:
    """The simulation with its own batch line (one request, each further request) for each server:
    one simulation per server, keeping that server's requests (the same seed draws the same
    arrivals for each server whatever the batch times)."""
    parts = []
    for k, (service_ms, item_ms) in enumerate(lines):
        doc = measured_spec(spec_doc, service_ms, item_ms, overhead_ms)
        sim = simulate_plan(doc)
        counts = [i.requests for i in sim.instances]
        assert sum(counts) == sim.latencies_ms.size, "one pool per CPU instance"
        start = sum(counts[:k])
        parts.append(sim.latencies_ms[start : start + counts[k]])
    every = np.concatenate(parts)
    p50, p90, p99 = np.percentile(every, [50, 90, 99]).tolist()
    return {"p50": p50, "p90": p90, "p99": p99}


def speed_adjusted(
    spec_doc: dict[str, Any],
    service_ms: float,
    item_ms: float,
    overhead_ms: float,
    slowdown: list[float],
    simulate_plan: Any,
) -> dict[str, Any]:
    """The simulation with each server's batch times multiplied by its core's slowdown (step unit
    time over calibration unit time)."""
    lines = [(service_ms * f, item_ms * f) for f in slowdown]
    return per_server(spec_doc, lines, overhead_ms, simulate_plan) | {"slowdown": slowdown}


def step_measured(
    spec_doc: dict[str, Any],
    served: list[dict[str, Any]],
    calibration: tuple[float, float],
    overhead_ms: float,
    loop_ms: float,
    simulate_plan: Any,
) -> dict[str, Any]:
    """The simulation with each server's batch line fitted to the batches it ran in the step itself
    (its statistics) and the step's own event-loop work per request (`core_inputs`): not a
    forecast, a check of the model (queueing, batching) given the service times the cores had. A
    server that ran batches of one size only keeps the calibration's further-request cost in the
    same proportion to its batch of one."""
    lines = []
    for seen in served:
        first, item, _ = fit_batches([seen])
        if len(seen["requests_by_batch_size"]) < 2:
            item = calibration[1] * first / calibration[0]
        first, item, outside_ms = core_inputs(first, item, overhead_ms, loop_ms)
        lines.append((first, item))
    out = per_server(spec_doc, lines, outside_ms, simulate_plan)
    return out | {"lines_ms": [[round(a, 3), round(b, 3)] for a, b in lines]}


def per_cpu_jiffies() -> list[list[int]]:
    """/proc/stat's cpuN lines: user nice system idle iowait irq softirq steal ... (clock ticks)."""
    lines = Path("/proc/stat").read_text().splitlines()
    return [[int(x) for x in ln.split()[1:9]] for ln in lines if ln.startswith("cpu") and ln[3].isdigit()]


def cpu_share(a: list[int], b: list[int]) -> dict[str, float]:
    d = [y - x for x, y in zip(a, b, strict=True)]
    total = sum(d) or 1
    busy = d[0] + d[1] + d[2] + d[5] + d[6]
    return {"busy": busy / total, "steal": d[7] / total, "idle": (d[3] + d[4]) / total}


def threads(pid: int) -> dict[int, tuple[int, int, int]]:
    """Per thread of `pid`: ns on a CPU, ns runnable but waiting for one, time slices."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, wait, slices = (int(x) for x in (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        out[int(task.name)] = (run, wait, slices)
    return out


def thread_share(
    pid: int, a: dict[int, tuple[int, int, int]], b: dict[int, tuple[int, int, int]], seconds: float
) -> dict[str, float]:
    """The main thread's (the event loop's) CPU fraction and wait, and the other threads' together."""
    d = {tid: [y - x for x, y in zip(a.get(tid, (0, 0, 0)), b[tid], strict=True)] for tid in b}
    loop = d.get(pid, [0, 0, 0])
    rest = [sum(v[i] for tid, v in d.items() if tid != pid) for i in range(3)]
    s = max(seconds, 1e-9) * 1e9
    return {
        "loop_cpu": loop[0] / s,
        "loop_wait_ms_per_s": loop[1] / s * 1e3,
        "rest_cpu": rest[0] / s,
        "rest_wait_ms_per_s": rest[1] / s * 1e3,
    }


def server_stats(client: httpx.Client, url: str, models: set[str]) -> dict[str, Any]:
    """A server's statistics summed over `models` (its tenants, not their base): requests by the size of the batch they ran in,
    and the total ns of success, queue and compute."""
    by_size: dict[int, list[int]] = {}  # batch size -> [requests, their summed batch ns]
    totals = {"success": [0, 0], "queue": [0, 0], "compute_infer": [0, 0]}
    for m in client.get(f"{url}/v2/models/stats").json()["model_stats"]:
        if m["name"] not in models:
            continue
        for key, pair in totals.items():
            pair[0] += m["inference_stats"][key]["count"]
            pair[1] += m["inference_stats"][key]["ns"]
        for b in m["batch_stats"]:
            seen = by_size.setdefault(b["batch_size"], [0, 0])
            seen[0] += b["compute_infer"]["count"]
            seen[1] += b["compute_infer"]["ns"]
    return {"by_size": by_size, "totals": totals}


def stats_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Requests by batch size and mean ms per request (success, queue, compute) between two reads."""
    sizes = {k: b["by_size"][k][0] - a["by_size"].get(k, [0, 0])[0] for k in b["by_size"]}
    sizes = {k: v for k, v in sorted(sizes.items()) if v}
    batch_ms = {k: (b["by_size"][k][1] - a["by_size"].get(k, [0, 0])[1]) / 1e6 / v for k, v in sizes.items()}
    n = sum(sizes.values()) or 1
    means = {}
    for key in b["totals"]:
        count = b["totals"][key][0] - a["totals"][key][0]
        means[f"{key}_ms"] = (b["totals"][key][1] - a["totals"][key][1]) / 1e6 / max(1, count)
    return {
        "requests_by_batch_size": sizes,
        "batch_ms_by_size": batch_ms,  # a batch's mean time by its size, as the server measured it
        "mean_batch_seen_by_request": sum(k * v for k, v in sizes.items()) / n,
        "executions": sum(v / k for k, v in sizes.items()),
    } | means


def fit_batches(served: list[dict[str, Any]]) -> tuple[float, float, dict[int, float]]:
    """The servers' batch times by size (stats_delta's), pooled: a straight line through them,
    weighted by how many batches of each size ran (least squares): the time of a batch of one and
    what each further request adds; and the pooled table."""
    pooled: dict[int, list[float]] = {}
    for seen in served:
        for k, n in seen["requests_by_batch_size"].items():
            row = pooled.setdefault(int(k), [0.0, 0.0])
            row[0] += n / int(k)  # batches
            row[1] += n / int(k) * seen["batch_ms_by_size"][k]
    table = {k: t / n for k, (n, t) in sorted(pooled.items())}
    weights = np.array([n for n, _ in pooled.values()])
    sizes = np.array(list(pooled), dtype=np.float64)
    times = np.array([t / n for n, t in pooled.values()])
    if len(pooled) < 2:
        return float(times[0]), 0.0, table
    design = np.vstack([np.ones_like(sizes), sizes - 1]).T * np.sqrt(weights)[:, None]
    (first, item), *_ = np.linalg.lstsq(design, times * np.sqrt(weights), rcond=None)
    return float(first), float(max(0.0, item)), table


def loop_ms_per_request(seen: dict[str, Any]) -> float:
    """The event loop's CPU per request during one observed loop (reading, decoding and answering,
    the health pings included): the loop CPU of the servers that served any, over all the requests.
    It shares the one-core server's core with its batches, so the simulation counts it as the
    core's (`core_inputs`)."""
    rps = seen["bench"]["requests_per_s"]
    if not seen["cores"] or not rps:
        return 0.0
    busy = [
        c["loop_cpu"]
        for c, s in zip(seen["cores"]["servers"], seen["servers"], strict=True)
        if s["requests_by_batch_size"]
    ]
    return sum(busy) * 1e3 / rps


def core_inputs(
    service_ms: float, item_ms: float, overhead_ms: float, loop_ms: float
) -> tuple[float, float, float]:
    """The simulation's batch line and overhead with the event loop's per-request work on the core:
    each request of a batch adds `loop_ms` to the core's time (a batch of k: first + loop, and
    item + loop per further request), and the time outside the batch loses as much (the lone
    request's overhead already held its own loop work)."""
    return service_ms + loop_ms, item_ms + loop_ms, max(0.0, overhead_ms - loop_ms)


def spec_at(doc: dict[str, Any], path: Path) -> FleetSpec:
    """`doc` written to `path` and read back as the planner reads a fleet spec (profiles relative to it)."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_fleet_spec(path)


def measured_spec(
    base: dict[str, Any], service_ms: float, item_ms: float, overhead_ms: float
) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    for entry in doc["models"]:
        for cap in entry["capacity"].values():
            cap["service_ms"] = round(service_ms, 3)
            cap["batch_item_ms"] = round(max(0.0, item_ms), 3)
            cap["overhead_ms"] = round(max(0.0, overhead_ms), 3)
            # the server's rule: a CPU batch is cut at CPU_MAX_ROWS rows unless the model sets its own
            cap["max_batch_size"] = min(cap.get("max_batch_size", 1), CPU_MAX_ROWS)
    return doc


def main() -> None:
    # SIGTERM (e.g. from `timeout`) ends the check like Ctrl-C: its `finally` stops the spinners (in
    # sessions of their own), the speedometer and the cluster, which would otherwise outlive it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True, help="demo repository with 3,000 tenants")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 60.0, 90.0, 120.0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sim-seconds", type=float, default=200.0)
    parser.add_argument(
        "--calibrate-rate",
        type=float,
        nargs="+",
        default=[100.0],
        help="req/s of the open loops whose batch times (from the servers' statistics, pooled) the simulation takes",
    )
    parser.add_argument(
        "--calibrate-seconds", type=float, default=20.0, help="length of each calibration loop"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="a `modelfleet serve` option for both servers"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="servers not pinned: each may use every core (2 here)"
    )
    parser.add_argument(
        "--keep-awake",
        action="store_true",
        help="a SCHED_IDLE spinner on each server's core, so that its vCPU never halts",
    )
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    plan_dir = Path(tempfile.mkdtemp(prefix="modelfleet-simcheck-"))
    modelfleet("plan", str(FLEET), "--catalog", str(CATALOG), "--out", str(plan_dir))
    port = free_port()
    modelfleet("cluster", "up", str(plan_dir), "--port", str(port), "--repo", str(args.repo),
               "--catalog", str(CATALOG), *([] if args.no_pin else ["--pin"]), "--scale", "1",
               *(f"--server-arg={a}" for a in args.server_arg))  # fmt: skip
    front = f"http://127.0.0.1:{port}"
    stats_client: httpx.Client | None = None
    speed: Speedometer | None = None
    spinners: list[subprocess.Popen[bytes]] = []
    try:
        state = json.loads((plan_dir / "cluster" / "state.json").read_text())
        started = time.monotonic()
        preload(state)
        print(f"preloaded in {time.monotonic() - started:.0f} s", flush=True)
        plan = plan_instances(yaml.safe_load((plan_dir / "plan.yaml").read_text()))
        ranking = alternating(plan)
        zipf = ["--models", ",".join(ranking), "--popularity", "zipf", "--zipf-s", "1.1"]
        pids = [s["pid"] for s in state["servers"]]
        cpus = [s["cpus"][0] if s["cpus"] else k for k, s in enumerate(state["servers"])]
        urls = [f"http://{state['host']}:{s['port']}" for s in state["servers"]]
        stats_client = httpx.Client(timeout=60, trust_env=False)
        speed = Speedometer(cpus)
        spinners = keep_awake(cpus) if args.keep_awake else []

        def observed(url: str, load: list[str], seconds: float, warmup: float) -> dict[str, Any]:
            """One bench run, with what the servers' statistics and the cores saw during it."""
            read_before = [server_stats(stats_client, u, set(p[1])) for u, p in zip(urls, plan, strict=True)]
            w0 = time.time()
            with Probe(pids) as probe, Pinger(urls) as pinger:
                doc = run_bench(url, load, seconds, warmup)
            served = [
                stats_delta(a, server_stats(stats_client, u, set(p[1])))
                for a, u, p in zip(read_before, urls, plan, strict=True)
            ]
            # the recorded window: after the bench's start-up (~1 s) and warm-up, to its end
            window = (w0 + warmup + 1.0, time.time() - 0.5)
            cores = probe.summary(*window, cpus)
            return {"bench": doc, "servers": served, "cores": cores, "pings": pinger.summary(*window),
                    "speed_unit_ms": speed.unit_ms(*window)}  # fmt: skip

        lone = observed(front, [*zipf, "--rate", "4", "--arrivals", "poisson"], 30, 3)
        lone_ms = lone["bench"]["latency_ms"]["p50"]
        first = state["servers"][0]
        own = ["--models", ",".join(plan[0][1]), "--popularity", "zipf", "--zipf-s", "1.1"]
        url0 = f"http://{state['host']}:{first['port']}"
        full = observed(url0, [*own, "-c", str(CAPACITY_CONCURRENCY)], 20, 3)
        c = CAPACITY_CONCURRENCY
        warm_item_ms = (c * 1e3 / full["bench"]["requests_per_s"] - lone_ms) / (c - 1)
        print(f"{lone_ms:.2f} ms alone; {full['bench']['requests_per_s']:.1f} req/s at c={c} "
              f"(+{warm_item_ms:.2f} ms per batched request, back to back)", flush=True)  # fmt: skip
        # What batches cost under the traffic the check sends (open loop, Poisson, through the front):
        # more per request than back to back (docs/benchmarks.md, "Plan simulation, third pass").
        calibrations = [
            observed(front, [*zipf, "--rate", str(r), "--arrivals", "poisson"], args.calibrate_seconds, 3)
            for r in args.calibrate_rate
        ]
        service_ms, item_ms, table = fit_batches([s for c in calibrations for s in c["servers"]])
        lone_batch_ms = statistics.fmean(s["compute_infer_ms"] for s in lone["servers"])
        overhead_ms = lone_ms - lone_batch_ms  # the lone request's time outside its batch
        print(f"batches at {'/'.join(f'{r:g}' for r in args.calibrate_rate)} req/s: {service_ms:.2f} ms for one, +{item_ms:.2f} ms "
              f"per further request; {overhead_ms:.2f} ms outside the batch", flush=True)  # fmt: skip
        calibration_loop_ms = statistics.fmean(loop_ms_per_request(c) for c in calibrations)
        executor_line = (service_ms, item_ms, overhead_ms)
        service_ms, item_ms, overhead_ms = core_inputs(service_ms, item_ms, overhead_ms, calibration_loop_ms)
        print(f"event loop {calibration_loop_ms:.2f} ms per request on the servers' cores: the simulation's batch "
              f"line {service_ms:.2f} + {item_ms:.2f} ms, {overhead_ms:.2f} ms outside", flush=True)  # fmt: skip
        base_doc = yaml.safe_load(FLEET.read_text())
        spec_doc = measured_spec(base_doc, service_ms, item_ms, overhead_ms)
        executor_spec = spec_at(measured_spec(base_doc, *executor_line), plan_dir / "executor-only.yaml")
        # per core, the mean of the calibration loops' medians
        calibration_unit_ms = [
            None if None in per_core else statistics.fmean(per_core)
            for per_core in zip(*(c["speed_unit_ms"] for c in calibrations), strict=True)
        ]
        print(f"core speed units at calibration: {calibration_unit_ms} ms", flush=True)
        spec, catalog = spec_at(spec_doc, plan_dir / "measured.yaml"), load_catalog(CATALOG)
        rows = []
        for rate in args.rates:
            before = [cpu_s([pid]) for pid in pids]
            others = cpu_s([state["nginx_pid"]]) + children_cpu_s()
            t0 = time.monotonic()
            seen = observed(
                front, [*zipf, "--rate", str(rate), "--arrivals", "poisson"], args.seconds, args.warmup
            )
            doc, served, cores, pings = seen["bench"], seen["servers"], seen["cores"], seen["pings"]
            wall = time.monotonic() - t0
            busy = [(cpu_s([pid]) - b) / wall for pid, b in zip(pids, before, strict=True)]
            front_cores = (cpu_s([state["nginx_pid"]]) + children_cpu_s() - others) / wall
            sim = simulate(
                spec, catalog, plan, rate, duration_s=args.sim_seconds, zipf_s=1.1, ranking=ranking
            )
            # the earlier passes' inputs: the executor's batch times only, the loop's work outside the core
            executor_only = simulate(
                executor_spec, catalog, plan, rate, duration_s=args.sim_seconds, zipf_s=1.1, ranking=ranking
            )
            row = {
                "rate": rate,
                "at_utc": time.strftime("%H:%M:%S", time.gmtime()),
                "loadavg": Path("/proc/loadavg").read_text().split()[:3],
                "measured": {k: doc["latency_ms"][k] for k in ("p50", "p90", "p99")}
                | {"requests_per_s": doc["requests_per_s"], "errors": doc["errors"]["total"], "cpu_busy": busy,
                   "bench_and_nginx_cores": front_cores, "machine_cores_busy": sum(busy) + front_cores},
                "servers": served,
                "cores": cores,
                "pings": pings,
                "series": doc.get("open_loop", {}).get("series", []),
                "simulated": {"p50": sim.p50_ms, "p90": sim.p90_ms, "p99": sim.p99_ms,
                              "utilisation": [i.utilisation for i in sim.instances],
                              "mean_batch": [i.mean_batch for i in sim.instances]},
            }  # fmt: skip
            row["p90_error"] = row["simulated"]["p90"] / row["measured"]["p90"] - 1
            row["executor_only"] = {"p50": executor_only.p50_ms, "p90": executor_only.p90_ms,
                                    "p99": executor_only.p99_ms,
                                    "p90_error": executor_only.p90_ms / row["measured"]["p90"] - 1}  # fmt: skip
            row["speed_unit_ms"] = seen["speed_unit_ms"]

            def simulate_plan(doc: dict[str, Any], rate: float = rate) -> Any:
                return simulate(spec_at(doc, plan_dir / "adjusted.yaml"), catalog, plan, rate,
                                duration_s=args.sim_seconds, zipf_s=1.1, ranking=ranking)  # fmt: skip

            if all(seen["speed_unit_ms"]) and all(calibration_unit_ms):
                slowdown = [u / c for u, c in zip(seen["speed_unit_ms"], calibration_unit_ms, strict=True)]
                adjusted = speed_adjusted(base_doc, service_ms, item_ms, overhead_ms, slowdown, simulate_plan)
                row["speed_adjusted"] = adjusted | {"p90_error": adjusted["p90"] / row["measured"]["p90"] - 1}
            if all(s["requests_by_batch_size"] for s in served):
                own = step_measured(base_doc, served, executor_line[:2], executor_line[2],
                                    loop_ms_per_request(seen), simulate_plan)  # fmt: skip
                row["step_measured"] = own | {"p90_error": own["p90"] / row["measured"]["p90"] - 1}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "series"}), flush=True)
    finally:
        if speed is not None:
            speed.close()
        for spinner in spinners:
            spinner.terminate()
            spinner.wait(10)
        modelfleet("cluster", "down", str(plan_dir))
        if stats_client is not None:
            stats_client.close()
    summary = {
        "machine": machine(),
        "server_args": args.server_arg,
        "pinned": not args.no_pin,
        "keep_awake": args.keep_awake,
        "service_ms": service_ms,
        "batch_item_ms": item_ms,
        "overhead_ms": overhead_ms,
        "loop_ms_per_request": calibration_loop_ms,
        "executor_line_ms": executor_line,
        "lone_p50_ms": lone_ms,
        "calibrate_rate": args.calibrate_rate,
        "calibrate_seconds": args.calibrate_seconds,
        "calibration_batch_ms": table,
        "warm_batch_item_ms": warm_item_ms,
        "capacity_rps_c32": full["bench"]["requests_per_s"],
        "lone": {
            "latency_ms": lone["bench"]["latency_ms"],
            "servers": lone["servers"],
            "cores": lone["cores"],
        },
        "capacity": {"servers": full["servers"], "cores": full["cores"]},
        "calibration_speed_unit_ms": calibration_unit_ms,
        "rows": rows,
        "p90_error_max_abs": max(abs(r["p90_error"]) for r in rows),
        "p90_error_median": statistics.median(r["p90_error"] for r in rows),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    for r in rows:
        m, s = r["measured"], r["simulated"]
        print(f"{r['rate']:>6.0f} req/s  measured P50/P90/P99 {m['p50']:6.1f} {m['p90']:6.1f} {m['p99']:6.1f} ms"
              f"  simulated {s['p50']:6.1f} {s['p90']:6.1f} {s['p99']:6.1f} ms  P90 {r['p90_error']:+.0%}"
              f"  busy {'/'.join(f'{b:.0%}' for b in m['cpu_busy'])} vs {'/'.join(f'{u:.0%}' for u in s['utilisation'])}"
              f"  cores busy {m['machine_cores_busy']:.2f} of {os.cpu_count()}")  # fmt: skip
        e = r["executor_only"]
        print(f"        batch times without the event loop's work (earlier passes): simulated "
              f"{e['p50']:6.1f} {e['p90']:6.1f} {e['p99']:6.1f} ms  P90 {e['p90_error']:+.0%}")  # fmt: skip
        if "speed_adjusted" in r:
            a = r["speed_adjusted"]
            print(f"        core slowdown {'/'.join(f'{x:.2f}' for x in a['slowdown'])}x: speed-adjusted simulated "
                  f"{a['p50']:6.1f} {a['p90']:6.1f} {a['p99']:6.1f} ms  P90 {a['p90_error']:+.0%}")  # fmt: skip
        if "step_measured" in r:
            o = r["step_measured"]
            print(f"        the step's own batch lines {o['lines_ms']} ms: simulated "
                  f"{o['p50']:6.1f} {o['p90']:6.1f} {o['p99']:6.1f} ms  P90 {o['p90_error']:+.0%}")  # fmt: skip
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2))
    if args.plot:
        plot(rows, args.plot)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rates = [r["rate"] for r in rows]
    for key, style in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        ax.plot(rates, [r["measured"][key] for r in rows], f"-{style}", label=f"measured {key.upper()}")
        ax.plot(rates, [r["simulated"][key] for r in rows], f"--{style}", label=f"simulated {key.upper()}")
    ax.set_xlabel("offered load, req/s (Zipf 1.1 over 3,000 tenants, 2 one-core servers)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Plan simulation against `cluster up --pin`")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
