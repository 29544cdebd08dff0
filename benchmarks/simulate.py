"""Issue 15 item 4: simulate a plan under Zipf traffic (modelfleet.planner.simulate), timed.

  python benchmarks/simulate.py seed-002                       # 40 x inf1.6xlarge at 6,230 req/s, Zipf 0 and 1.1
  python benchmarks/simulate.py plan PLAN_DIR FLEET.yaml RATE  # a plan.yaml written by `modelfleet plan --out`

The second form is the hook for validating the simulation against a real cluster (`modelfleet cluster
up` on the same plan.yaml): run both at the same RATE and Zipf exponent and compare P90.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from modelfleet.host import cpu_model
from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.problem import build_problem, with_max_total
from modelfleet.planner.simulate import (
    PlannedInstance,
    Simulation,
    listed_ranking,
    plan_instances,
    simulate,
)
from modelfleet.planner.solve import solve
from modelfleet.planner.spec import FleetSpec, load_fleet_spec

ROOT = Path(__file__).resolve().parents[1]


def report(label: str, sim: Simulation, seconds: float) -> None:
    mean_use = sum(i.utilisation for i in sim.instances) / len(sim.instances)
    print(
        f"{label}: {sim.requests:,} requests measured, P50 {sim.p50_ms:,.1f} ms, P90 {sim.p90_ms:,.1f} ms, "
        f"P99 {sim.p99_ms:,.1f} ms; utilisation mean {mean_use:.1%}, max {sim.max_utilisation:.1%}; "
        f"{len(sim.overloaded)} instance(s) overloaded; simulated {sim.duration_s:g} s in {seconds:.2f} s"
    )


def run(spec: FleetSpec, plan: list[PlannedInstance], args: argparse.Namespace, zipf: float) -> None:
    started = time.monotonic()
    sim = simulate(
        spec,
        load_catalog(args.catalog),
        plan,
        args.rate,
        duration_s=args.duration_s,
        zipf_s=zipf,
        seed=args.seed,
        ranking=listed_ranking(spec) if args.zipf_listed else None,
    )
    report(f"{len(plan)} instances, {args.rate:,.0f} req/s, Zipf {zipf:g}", sim, time.monotonic() - started)


def seed_002(args: argparse.Namespace) -> None:
    spec = load_fleet_spec(ROOT / "examples/seed-002/fleet.yaml")
    plan = solve(with_max_total(build_problem(spec, load_catalog()), 40))
    instances: list[PlannedInstance] = [(i.type, i.models, i.cores) for i in plan.instances]
    for zipf in (0.0, 1.1) if args.zipf is None else (args.zipf,):
        run(spec, instances, args, zipf)


def from_plan(args: argparse.Namespace) -> None:
    spec = load_fleet_spec(args.fleet)
    document = yaml.safe_load((args.plan_dir / "plan.yaml").read_text(encoding="utf-8"))
    run(spec, plan_instances(document), args, 1.1 if args.zipf is None else args.zipf)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed-002")
    seed.add_argument("--rate", type=float, default=6230.0)
    other = sub.add_parser("plan")
    other.add_argument("plan_dir", type=Path)
    other.add_argument("fleet", type=Path)
    other.add_argument("rate", type=float)
    for p in (seed, other):
        p.add_argument("--duration-s", type=float, default=20.0)
        p.add_argument("--zipf", type=float, default=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--catalog", type=Path, default=None, help="instance catalogue (default: shipped)")
        p.add_argument(
            "--zipf-listed",
            action="store_true",
            help="equal-traffic models ranked in the spec's order, as `modelfleet bench` ranks its list",
        )
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')} | nproc {len(os.sched_getaffinity(0))} | {cpu_model() or '?'}")
    print("$ python benchmarks/simulate.py " + " ".join(sys.argv[1:]))
    {"seed-002": seed_002, "plan": from_plan}[args.command](args)


if __name__ == "__main__":
    main()
