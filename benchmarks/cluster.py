"""Issue 15 targets: the local fleet (`modelfleet cluster up`) against one server holding every tenant.

Brings up the plan of examples/local-fleet (3,000 demo tenants on 3 servers behind nginx) and, beside
it, one `modelfleet serve` of the whole repository. Then, round after round, with `modelfleet bench`:

  fleet   Zipf 1.1 over all 3,000 tenants through the nginx front, sequence 32, concurrency 8
  single  the same load straight at the one server (and at one with --intra-op-threads 1)
  direct  `identity` at concurrency 8 straight at the server that holds it, then
  front   `identity` at concurrency 8 through nginx: short pairs, alternating (nginx's share of the P50)

Afterwards it reads each fleet server's statistics (every tenant answered must be one the plan gave
that server), stops the fleet with `cluster down` and checks that none of its processes is left.

    modelfleet demo-repo /tmp/demo --tenants 3000
    python benchmarks/cluster.py --repo /tmp/demo --rounds 3 --seconds 15 --report /tmp/cluster.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from many_models import Server, free_port, machine

from modelfleet.cluster.procs import children, cmdline
from modelfleet.cluster.state import read_state

FLEET = Path(__file__).resolve().parent.parent / "examples" / "local-fleet" / "fleet.yaml"
TENANTS = ["--model-pattern", "tenant-{i:05d}", "--model-start", "1", "--model-count", "3000"]
ZIPF = [*TENANTS, "--popularity", "zipf", "--zipf-s", "1.1", "-c", "8", "--seq-len", "32"]
IDENTITY = ["--model", "identity", "-c", "8"]
FIGURES = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_per_request")


def modelfleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise SystemExit(
            f"modelfleet {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return done


def cpu_s(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their children (nginx's workers)."""
    total = 0
    for pid in pids + [c for p in pids for c in children(p)]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def bench(url: str, load: list[str], seconds: float, warmup: float, pids: list[int]) -> dict[str, Any]:
    """One `modelfleet bench` run: its report (errors do not stop the script; they are reported), and
    the CPU time the serving processes used per recorded request (warm-up included: an upper bound)."""
    cpu_before = cpu_s(pids)
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        modelfleet("bench", "--url", url, *load, "--duration", str(seconds), "--warmup", str(warmup),
                   "--report", report.name, "--no-fail-on-error")  # fmt: skip
        doc: dict[str, Any] = json.loads(Path(report.name).read_text())
    used = cpu_s(pids) - cpu_before
    return {
        "server_cpu_ms_per_request": round(1000 * used / max(1, doc["requests"]), 3),
        "requests_per_s": doc["requests_per_s"],
        "p50_ms": doc["latency_ms"]["p50"],
        "p90_ms": doc["latency_ms"]["p90"],
        "p99_ms": doc["latency_ms"]["p99"],
        "errors": doc["errors"]["total"] + doc["warmup_errors"],
        "models_hit": doc["models"]["hit"],
    }


def routing_check(plan_dir: Path) -> dict[str, Any]:
    """From each fleet server's /v2/models/stats: the models it answered, all of them planned there?"""
    state = read_state(plan_dir)
    assert state is not None
    answered, misplaced = 0, []
    for server in state.servers:
        planned = set(Path(server.models_file).read_text().split())
        url = f"http://{state.host}:{server.port}/v2/models/stats"
        stats = httpx.get(url, trust_env=False, timeout=30).raise_for_status().json()
        for entry in stats["model_stats"]:
            count = entry["inference_stats"]["success"]["count"]
            if count and entry["name"].startswith("tenant-"):
                answered += count
                if entry["name"] not in planned:
                    misplaced.append(f"{entry['name']}@{server.name}")
    return {"tenant_inferences_answered": answered, "answered_by_a_server_not_holding_the_model": misplaced}


def identity_server(plan_dir: Path) -> tuple[str, int]:
    """The URL and pid of the fleet server that holds `identity`."""
    state = read_state(plan_dir)
    assert state is not None
    holder = next(s for s in state.servers if "identity" in Path(s.models_file).read_text().split())
    return f"http://{state.host}:{holder.port}", holder.pid


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True, help="demo repository with 3,000 tenants")
    parser.add_argument(
        "--plan-dir", type=Path, help="a plan of the fleet (default: planned into a tmp folder)"
    )
    parser.add_argument("--fleet", type=Path, default=FLEET)
    parser.add_argument("--scale", type=float, help="cluster up --scale (default: its own choice)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--identity-pairs", type=int, default=4, help="direct/front pairs per round")
    parser.add_argument("--identity-seconds", type=float, default=5.0)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()

    plan_dir = args.plan_dir or Path(tempfile.mkdtemp(prefix="modelfleet-local-fleet-"))
    if not (plan_dir / "plan.yaml").is_file():
        modelfleet("plan", str(args.fleet), "--out", str(plan_dir))
    port = free_port()
    up = ["cluster", "up", str(plan_dir), "--port", str(port), "--repo", str(args.repo)]
    modelfleet(*up, *(["--scale", str(args.scale)] if args.scale else []))
    front = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    single = single1 = None
    try:
        single = Server(args.repo)
        single1 = Server(args.repo, "--intra-op-threads", "1")
        direct, holder = identity_server(plan_dir)
        state = read_state(plan_dir)
        assert state is not None
        fleet_pids, t = state.pids, args.seconds
        for i in range(args.rounds):
            row = {
                "fleet": bench(front, ZIPF, t, args.warmup, fleet_pids),
                "single": bench(single.url, ZIPF, t, args.warmup, [single.proc.pid]),
                "single_1_thread": bench(single1.url, ZIPF, t, args.warmup, [single1.proc.pid]),
            }
            for _ in range(args.identity_pairs):  # short alternating pairs: the load moves less within one
                pair = {
                    "direct": bench(direct, IDENTITY, args.identity_seconds, 1.0, [holder]),
                    "front": bench(front, IDENTITY, args.identity_seconds, 1.0, [holder, state.nginx_pid]),
                }
                row.setdefault("identity_pairs", []).append(pair)
            rows.append(row)
            print(f"round {i + 1}: " + json.dumps(row), flush=True)
        routing = routing_check(plan_dir)
        pids = state.pids
    finally:
        for server in (single, single1):
            if server is not None:
                server.proc.terminate()
                server.proc.wait(60)
        modelfleet("cluster", "down", str(plan_dir))
    left = [pid for pid in pids if cmdline(pid) is not None]
    summary = summarize(rows, routing, left, state.scale)
    print(json.dumps(summary, indent=2))
    if args.report:
        args.report.write_text(
            json.dumps({"rounds": rows, "summary": summary, "machine": machine()}, indent=2)
        )


def summarize(
    rows: list[dict[str, Any]], routing: dict[str, Any], left: list[int], scale: float
) -> dict[str, Any]:
    """Medians over the rounds; ratios from the same rounds."""
    fleet = [r["fleet"] for r in rows]
    single = [r["single"] for r in rows]
    ratios = [r["fleet"]["requests_per_s"] / r["single"]["requests_per_s"] for r in rows]
    ratios1 = [r["fleet"]["requests_per_s"] / r["single_1_thread"]["requests_per_s"] for r in rows]
    pairs = [p for r in rows for p in r["identity_pairs"]]
    overheads = [p["front"]["p50_ms"] / p["direct"]["p50_ms"] - 1 for p in pairs]
    direct = [p["direct"] for p in pairs]
    through = [p["front"] for p in pairs]
    return {
        "machine": machine(),
        "scale": scale,
        "fleet": {k: median(fleet, k) for k in FIGURES},
        "fleet_errors": sum(r["errors"] for r in fleet),
        "single": {k: median(single, k) for k in FIGURES},
        "single_errors": sum(r["errors"] for r in single),
        "single_1_thread": {k: median([r["single_1_thread"] for r in rows], k) for k in FIGURES},
        "single_1_thread_errors": sum(r["single_1_thread"]["errors"] for r in rows),
        "throughput_ratio_fleet_over_single": {"median": statistics.median(ratios), "rounds": ratios},
        "throughput_ratio_fleet_over_single_1_thread": statistics.median(ratios1),
        "identity_direct": {k: median(direct, k) for k in FIGURES},
        "identity_front": {k: median(through, k) for k in FIGURES},
        "nginx_p50_overhead": {"median_of_pairs": statistics.median(overheads), "pairs": overheads},
        "identity_errors": sum(p["errors"] for p in direct + through),
        "routing": routing,
        "processes_left_after_down": left,
    }


if __name__ == "__main__":
    main()
