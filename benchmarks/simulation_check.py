"""Issue 15 item 4: the plan simulation against a real local cluster, at the same Zipf rates.

Plans examples/local-fleet/validate.yaml (the demo's 3,000 tenants on two one-core instances, its
catalog.yaml) and runs it with `modelfleet cluster up --pin`: two `modelfleet serve` processes, each
on a core of its own, behind nginx. Every tenant is loaded first (the simulation has no cold loads).
Then, on this machine:

  service   the service time: P50 of an open loop at a low rate through the front (a request alone)
  capacity  one server's throughput at concurrency 32 over its own tenants (batches of up to 32):
            the time each further request adds to a batch, (32 / throughput - service) / 31
  rates     for each rate, an open loop (Poisson arrivals) through the front with Zipf 1.1 over the
            tenants, ranked so that popular tenants alternate between the two servers; and the
            simulation of the same plan, with the measured service times, at the same rate and
            ranking. Predicted and measured P50/P90/P99, and each server's busy fraction (its CPU
            time over the run) beside the simulated utilisation.

    modelfleet demo-repo /tmp/demo3k --tenants 3000
    python benchmarks/simulation_check.py --repo /tmp/demo3k --report /tmp/simcheck.json --plot /tmp/simcheck.png \
        --server-arg=--gil-switch-interval-us=500
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import cpu_s, modelfleet
from many_models import free_port, machine

from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.simulate import plan_instances, simulate
from modelfleet.planner.spec import load_fleet_spec

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


def measured_spec(base: dict[str, Any], service_ms: float, item_ms: float) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    for entry in doc["models"]:
        for cap in entry["capacity"].values():
            cap["service_ms"] = round(service_ms, 3)
            cap["batch_item_ms"] = round(max(0.0, item_ms), 3)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, required=True, help="demo repository with 3,000 tenants")
    parser.add_argument("--rates", type=float, nargs="+", default=[30.0, 60.0, 90.0, 120.0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--sim-seconds", type=float, default=200.0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="a `modelfleet serve` option for both servers"
    )
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    plan_dir = Path(tempfile.mkdtemp(prefix="modelfleet-simcheck-"))
    modelfleet("plan", str(FLEET), "--catalog", str(CATALOG), "--out", str(plan_dir))
    port = free_port()
    modelfleet("cluster", "up", str(plan_dir), "--port", str(port), "--repo", str(args.repo),
               "--catalog", str(CATALOG), "--pin", "--scale", "1",
               *(f"--server-arg={a}" for a in args.server_arg))  # fmt: skip
    front = f"http://127.0.0.1:{port}"
    try:
        state = json.loads((plan_dir / "cluster" / "state.json").read_text())
        started = time.monotonic()
        preload(state)
        print(f"preloaded in {time.monotonic() - started:.0f} s", flush=True)
        plan = plan_instances(yaml.safe_load((plan_dir / "plan.yaml").read_text()))
        ranking = alternating(plan)
        zipf = ["--models", ",".join(ranking), "--popularity", "zipf", "--zipf-s", "1.1"]
        lone = run_bench(front, [*zipf, "--rate", "4", "--arrivals", "poisson"], 30, 3)
        service_ms = lone["latency_ms"]["p50"]
        first = state["servers"][0]
        own = ["--models", ",".join(plan[0][1]), "--popularity", "zipf", "--zipf-s", "1.1"]
        url0 = f"http://{state['host']}:{first['port']}"
        full = run_bench(url0, [*own, "-c", str(CAPACITY_CONCURRENCY)], 20, 3)
        c = CAPACITY_CONCURRENCY
        item_ms = (c * 1e3 / full["requests_per_s"] - service_ms) / (c - 1)
        print(f"service {service_ms:.2f} ms alone; {full['requests_per_s']:.1f} req/s at c={c}: "
              f"+{item_ms:.2f} ms per batched request", flush=True)  # fmt: skip
        spec_doc = measured_spec(yaml.safe_load(FLEET.read_text()), service_ms, item_ms)
        spec_path = plan_dir / "measured.yaml"
        spec_path.write_text(yaml.safe_dump(spec_doc, sort_keys=False))
        spec, catalog = load_fleet_spec(spec_path), load_catalog(CATALOG)
        pids = [s["pid"] for s in state["servers"]]
        rows = []
        for rate in args.rates:
            before = [cpu_s([pid]) for pid in pids]
            others = cpu_s([state["nginx_pid"]]) + children_cpu_s()
            t0 = time.monotonic()
            doc = run_bench(
                front, [*zipf, "--rate", str(rate), "--arrivals", "poisson"], args.seconds, args.warmup
            )
            wall = time.monotonic() - t0
            busy = [(cpu_s([pid]) - b) / wall for pid, b in zip(pids, before, strict=True)]
            # the load generator (a child of this script) and nginx: on 2 cores they compete with the servers
            front_cores = (cpu_s([state["nginx_pid"]]) + children_cpu_s() - others) / wall
            sim = simulate(
                spec, catalog, plan, rate, duration_s=args.sim_seconds, zipf_s=1.1, ranking=ranking
            )
            row = {
                "rate": rate,
                "measured": {k: doc["latency_ms"][k] for k in ("p50", "p90", "p99")}
                | {"requests_per_s": doc["requests_per_s"], "errors": doc["errors"]["total"], "cpu_busy": busy,
                   "bench_and_nginx_cores": front_cores, "machine_cores_busy": sum(busy) + front_cores},
                "simulated": {"p50": sim.p50_ms, "p90": sim.p90_ms, "p99": sim.p99_ms,
                              "utilisation": [i.utilisation for i in sim.instances]},
            }  # fmt: skip
            row["p90_error"] = row["simulated"]["p90"] / row["measured"]["p90"] - 1
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        modelfleet("cluster", "down", str(plan_dir))
    summary = {
        "machine": machine(),
        "server_args": args.server_arg,
        "service_ms": service_ms,
        "batch_item_ms": item_ms,
        "capacity_rps_c32": full["requests_per_s"],
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
