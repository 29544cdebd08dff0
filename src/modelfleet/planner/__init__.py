"""The fleet planner: pack many models onto the cheapest instances (`modelfleet plan`) and score the
hosting options (`modelfleet advise`). Solving needs the `plan` extra (ortools, matplotlib).

The public API, for the other tools (deploy, cluster, recommend): the instance catalogue, the fleet
spec, the YAML loader with file:line errors, and the input error. They need pydantic and PyYAML only;
everything else here is the planner's own and may change (the CLI imports its modules directly).

    spec.py / catalog.py   inputs (pydantic, read from YAML with file:line errors: yamlfile.py)
    profiles.py            models that reference a profile.json (modelfleet profile)
    problem.py             the inputs resolved into integer demands and capacities per type
    bound.py               lower bounds: the LP (dual, Kelley's cutting planes) and its dimensions
    benders.py             the relaxation with whole instances per type (Benders): bound and type mixes
    heuristic.py, fill.py  type choice, knapsack / dot-product / first-fit packing (bins.py: Bin)
    improve.py             local improvement: drain, merge, downsize
    exact.py               CP-SAT: counts of identical models; (model, instance) assignment
    cores.py               models onto accelerator cores
    solve.py               which to run; result.py the plan; report.py, charts.py its outputs
    simulate.py            discrete-event simulation of a plan (simreport.py: its outputs)
    advise.py              hosting options on seed 001's fitness functions, grouping check
"""

from modelfleet.planner.catalog import Catalog, InstanceType, load_catalog
from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.spec import FleetSpec, load_fleet_spec
from modelfleet.planner.yamlfile import load_yaml_model

__all__ = [
    "Catalog",
    "FleetSpec",
    "InstanceType",
    "PlanInputError",
    "load_catalog",
    "load_fleet_spec",
    "load_yaml_model",
]
