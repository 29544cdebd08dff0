"""Issue 12 benchmarks: the fleet planner. Each subcommand prints its figures, the command and the machine.

seed-002        examples/seed-002/fleet.yaml: proven optimum, and with --max-instances 40
heterogeneous   examples/heterogeneous/fleet.yaml: exact (auto) against first-fit decreasing
large           N synthetic heterogeneous models x 10 instance types (bench target: 3,000, gap <= 1 %
                within 60 s; 100,000 with --method heuristic, within 3 % of the bound in <= 60 s, < 2 GiB)

  python benchmarks/planner.py seed-002
  python benchmarks/planner.py heterogeneous
  python benchmarks/planner.py large --models 3000 --time-limit-s 60 --workers 2
  python benchmarks/planner.py large --models 100000 --method heuristic --time-limit-s 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.exact import solve_assignment
from modelfleet.planner.heuristic import first_fit_decreasing
from modelfleet.planner.problem import build_problem, with_max_total
from modelfleet.planner.result import Plan
from modelfleet.planner.solve import Method, solve
from modelfleet.planner.spec import load_fleet_spec
from modelfleet.planner.synth import heterogeneous_fleet

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?"
        )
    except OSError:
        model = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{dt.date.today()} | nproc {os.cpu_count()} | {model} | Python {platform.python_version()} | loadavg {load}"


def show(label: str, plan: Plan) -> None:
    print(
        f"{label}: ${plan.cost_per_hour:,.4f}/h, bound ${plan.lower_bound_cost_per_hour:,.4f}/h, "
        f"gap {plan.gap:.3%} ({plan.status.value}), {plan.by_type}, solve {plan.solve_time_s:.2f} s, {plan.solver}"
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_002(args: argparse.Namespace) -> None:
    problem = build_problem(load_fleet_spec(ROOT / "examples/seed-002/fleet.yaml"), load_catalog())
    show("seed 002", solve(problem, Method.AUTO, args.time_limit_s, args.workers))
    show(
        "seed 002, --max-instances 40",
        solve(with_max_total(problem, 40), Method.AUTO, args.time_limit_s, args.workers),
    )


def heterogeneous(args: argparse.Namespace) -> None:
    problem = build_problem(load_fleet_spec(ROOT / "examples/heterogeneous/fleet.yaml"), load_catalog())
    ffd = first_fit_decreasing(problem)
    assert ffd is not None
    ffd_cost = sum(problem.types[b.type].usd_per_hour for b in ffd)
    plan = solve(problem, Method.AUTO, args.time_limit_s, args.workers)
    show("heterogeneous example (auto)", plan)
    saving = 1 - plan.cost_per_hour / ffd_cost
    print(f"first-fit decreasing: ${ffd_cost:,.4f}/h on {len(ffd)} instances; the plan saves {saving:.1%}")
    started = time.monotonic()
    exact = solve_assignment(problem, ffd, args.time_limit_s, args.workers, None)
    assert exact is not None
    exact_cost = sum(problem.types[t].usd_per_hour for t, members in exact.bins if members)
    print(
        f"CP-SAT assignment alone, started from the FFD packing: ${exact_cost:,.4f}/h, bound "
        f"${exact.lower_bound:,.4f}/h ({exact.status.value}) in {time.monotonic() - started:.2f} s; "
        f"{1 - exact_cost / ffd_cost:.1%} under FFD"
    )


def large(args: argparse.Namespace) -> None:
    started = time.monotonic()
    problem = build_problem(heterogeneous_fleet(args.models, seed=args.seed), load_catalog())
    built = time.monotonic() - started
    print(
        f"{problem.n_models:,} models ({int(problem.replicas.sum()):,} replicas) x {problem.n_types} types, built in {built:.1f} s"
    )
    ffd = first_fit_decreasing(problem)
    if ffd is not None:
        print(f"first-fit decreasing: ${sum(problem.types[b.type].usd_per_hour for b in ffd):,.3f}/h")
    plan = solve(problem, Method(args.method), args.time_limit_s, args.workers)
    show(f"{args.models:,} models ({args.method})", plan)
    print(f"loadavg after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"peak RSS {peak_rss_mib():,.0f} MiB (whole process, spec generation included)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("seed-002", "heterogeneous", "large"):
        p = sub.add_parser(name)
        p.add_argument("--time-limit-s", type=float, default=30.0)
        p.add_argument("--workers", type=int, default=2)
        if name == "large":
            p.add_argument("--models", type=int, default=3000)
            p.add_argument("--method", default="auto", choices=[m.value for m in Method])
            p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    print("$ python benchmarks/planner.py " + " ".join(sys.argv[1:]))
    {"seed-002": seed_002, "heterogeneous": heterogeneous, "large": large}[args.command](args)


if __name__ == "__main__":
    main()
