"""`modelfleet plan` and `modelfleet advise`: pack a fleet of models onto the cheapest instances, and
score the hosting options. Option parsing only; the planner (ortools, matplotlib) loads when called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelfleet.planner.catalog import Catalog
    from modelfleet.planner.result import Plan
    from modelfleet.planner.simulate import Simulation
    from modelfleet.planner.solve import Method
    from modelfleet.planner.spec import FleetSpec

EXIT_INPUT = 2  # bad fleet spec or catalogue, or constraints no fleet meets: nothing written

CatalogOption = Annotated[
    Path | None,
    typer.Option("--catalog", help="Instance catalogue YAML (default: the one shipped with modelfleet)."),
]


def plan(
    fleet: Annotated[
        Path, typer.Argument(help="Fleet spec YAML: models, capacities, traffic, SLO, options.")
    ],
    catalog: CatalogOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write plan.yaml, packing.png and cost_by_type.png here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON document.")] = False,
    max_instances: Annotated[
        int | None, typer.Option("--max-instances", min=1, help="At most this many instances in all.")
    ] = None,
    method: Annotated[
        str, typer.Option("--solver", help="auto, exact (CP-SAT) or heuristic (first-fit + local search).")
    ] = "auto",
    time_limit_s: Annotated[float, typer.Option("--time-limit-s", min=0.1, help="Solver time limit.")] = 10.0,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="CP-SAT worker threads (default: the CPUs, at most 8).")
    ] = min(8, os.cpu_count() or 1),
    simulate_rps: Annotated[
        float | None,
        typer.Option(
            "--simulate",
            min=0.001,
            metavar="RATE",
            help="Then simulate the plan at RATE req/s of Zipf traffic: latency percentiles, use per instance.",
        ),
    ] = None,
    simulate_s: Annotated[float, typer.Option("--simulate-s", min=0.1, help="Simulated seconds.")] = 20.0,
    zipf: Annotated[
        float, typer.Option("--zipf", min=0.0, help="Zipf exponent of the simulated traffic (0: uniform).")
    ] = 1.1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the simulation.")] = 0,
    zipf_listed: Annotated[
        bool,
        typer.Option(
            "--zipf-listed",
            help="Models of equal declared traffic take their Zipf ranks in the spec's order (as `modelfleet "
            "bench --popularity zipf` ranks its model list), not in a random order.",
        ),
    ] = False,
) -> None:
    """Pack the fleet's models onto the cheapest set of instances: the instances by type, their use,
    $/h, $ per model-hour and per million inferences, the proven lower bound and the gap; with
    --simulate, the plan's latency and use under Zipf traffic (discrete-event simulation)."""
    from rich.console import Console

    from modelfleet.planner.errors import PlanInputError
    from modelfleet.planner.solve import Method

    err = Console(stderr=True)
    try:
        chosen = Method(method)
    except ValueError:
        raise typer.BadParameter(f"--solver must be auto, exact or heuristic, not '{method}'") from None
    try:
        spec, cat, result = _plan(fleet, catalog, max_instances, chosen, time_limit_s, workers, quiet=as_json)
        sim = None
        if simulate_rps is not None:
            from modelfleet.planner.simulate import listed_ranking, simulate

            instances = [(i.type, i.models, i.cores) for i in result.instances]
            sim = simulate(
                spec,
                cat,
                instances,
                simulate_rps,
                duration_s=simulate_s,
                zipf_s=zipf,
                seed=seed,
                ranking=listed_ranking(spec) if zipf_listed else None,
            )
    except PlanInputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    _show(result, out, as_json, sim)


def _plan(
    fleet: Path,
    catalog: Path | None,
    max_instances: int | None,
    method: Method,
    time_limit_s: float,
    workers: int,
    quiet: bool,
) -> tuple[FleetSpec, Catalog, Plan]:
    from rich.console import Console

    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.problem import build_problem, with_max_total
    from modelfleet.planner.report import solve_progress
    from modelfleet.planner.solve import solve
    from modelfleet.planner.spec import load_fleet_spec

    spec, cat = load_fleet_spec(fleet), load_catalog(catalog)
    problem = with_max_total(build_problem(spec, cat), max_instances)
    with solve_progress(Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task(f"planning {problem.n_models:,} models", total=time_limit_s)
        plan = solve(
            problem, method, time_limit_s, workers, progress=lambda text: bar.update(task, description=text)
        )
    return spec, cat, plan


def _show(result: Plan, out: Path | None, as_json: bool, sim: Simulation | None) -> None:
    import json

    from rich.console import Console

    from modelfleet.planner.report import print_plan, write_plan_yaml
    from modelfleet.planner.result import plan_document
    from modelfleet.planner.simreport import print_simulation, simulation_chart, simulation_document

    written = []
    if out is not None:
        from modelfleet.planner.charts import cost_chart, packing_chart

        out.mkdir(parents=True, exist_ok=True)
        write_plan_yaml(result, out / "plan.yaml")
        packing_chart(result, out / "packing.png")
        cost_chart(result, out / "cost_by_type.png")
        written = [out / "plan.yaml", out / "packing.png", out / "cost_by_type.png"]
        if sim is not None:
            text = json.dumps(simulation_document(sim), indent=2)
            (out / "simulation.json").write_text(text + "\n", encoding="utf-8")
            simulation_chart(sim, out / "simulation.png")
            written += [out / "simulation.json", out / "simulation.png"]
    if as_json:
        doc = plan_document(result)
        if sim is not None:
            doc["simulation"] = simulation_document(sim)
        print(json.dumps(doc, indent=2))
        return
    console = Console()
    print_plan(result, console)
    if sim is not None:
        print_simulation(sim, console)
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)


def advise(
    fleet: Annotated[Path, typer.Argument(help="Fleet spec YAML (as for `modelfleet plan`).")],
    catalog: CatalogOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write advice.yaml and fitness.png here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as one JSON document.")] = False,
    time_limit_s: Annotated[
        float, typer.Option("--time-limit-s", min=0.1, help="Planner time limit.")
    ] = 10.0,
) -> None:
    """Score the hosting options (one endpoint per model, a multi-model server with LRU, a packed
    fleet, serverless) on seed 001's five fitness functions, and check how the models group."""
    import json

    from rich.console import Console

    from modelfleet.planner.advise import advice_document, print_advice, spider_chart
    from modelfleet.planner.advise import advise as run_advice
    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.errors import PlanInputError
    from modelfleet.planner.spec import load_fleet_spec

    try:
        spec = load_fleet_spec(fleet)
        advice = run_advice(spec, load_catalog(catalog), time_limit_s)
    except PlanInputError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    if out is not None:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        (out / "advice.yaml").write_text(
            yaml.safe_dump(advice_document(advice), sort_keys=False), encoding="utf-8"
        )
        spider_chart(advice, out / "fitness.png")
    if as_json:
        print(json.dumps(advice_document(advice), indent=2))
    else:
        print_advice(advice, Console())
