"""`modelfleet plan` and `modelfleet advise`: pack a fleet of models onto the cheapest instances, and
score the hosting options. Option parsing only; the planner (ortools, matplotlib) loads when called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelfleet.planner.result import Plan
    from modelfleet.planner.solve import Method

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
) -> None:
    """Pack the fleet's models onto the cheapest set of instances: the instances by type, their use,
    $/h, $ per model-hour and per million inferences, the proven lower bound and the gap."""
    from rich.console import Console

    from modelfleet.planner.errors import PlanInputError
    from modelfleet.planner.solve import Method

    err = Console(stderr=True)
    try:
        chosen = Method(method)
    except ValueError:
        raise typer.BadParameter(f"--solver must be auto, exact or heuristic, not '{method}'") from None
    try:
        result = _plan(fleet, catalog, max_instances, chosen, time_limit_s, workers, quiet=as_json)
    except PlanInputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    _show(result, out, as_json)


def _plan(
    fleet: Path,
    catalog: Path | None,
    max_instances: int | None,
    method: Method,
    time_limit_s: float,
    workers: int,
    quiet: bool,
) -> Plan:
    from rich.console import Console

    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.problem import build_problem, with_max_total
    from modelfleet.planner.report import solve_progress
    from modelfleet.planner.solve import solve
    from modelfleet.planner.spec import load_fleet_spec

    problem = with_max_total(build_problem(load_fleet_spec(fleet), load_catalog(catalog)), max_instances)
    with solve_progress(Console(stderr=True), disable=quiet) as bar:
        task = bar.add_task(f"planning {problem.n_models:,} models", total=time_limit_s)
        return solve(
            problem, method, time_limit_s, workers, progress=lambda text: bar.update(task, description=text)
        )


def _show(result: Plan, out: Path | None, as_json: bool) -> None:
    from rich.console import Console

    from modelfleet.planner.report import plan_json, print_plan, write_plan_yaml

    if out is not None:
        from modelfleet.planner.charts import cost_chart, packing_chart

        out.mkdir(parents=True, exist_ok=True)
        write_plan_yaml(result, out / "plan.yaml")
        packing_chart(result, out / "packing.png")
        cost_chart(result, out / "cost_by_type.png")
    if as_json:
        print(plan_json(result))
    else:
        print_plan(result, Console())
        if out is not None:
            Console().print(f"wrote {out / 'plan.yaml'}, {out / 'packing.png'}, {out / 'cost_by_type.png'}")


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
