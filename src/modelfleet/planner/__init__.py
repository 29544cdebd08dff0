"""The fleet planner: pack many models onto the cheapest instances (`modelfleet plan`) and score the
hosting options (`modelfleet advise`). Needs the `plan` extra (ortools, matplotlib).

    spec.py / catalog.py   inputs (pydantic, read from YAML with file:line errors)
    problem.py             the inputs resolved into integer demands and capacities per type
    bound.py               the LP lower bound (dual, Kelley's cutting planes)
    heuristic.py           type choice, first-fit / dot-product packing, local improvement
    exact.py               CP-SAT: counts of identical models; (model, instance) assignment
    solve.py               which to run; result.py the plan; report.py, charts.py its outputs
    advise.py              hosting options on seed 001's fitness functions, grouping check
"""
