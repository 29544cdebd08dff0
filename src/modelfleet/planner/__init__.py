"""The fleet planner: pack many models onto the cheapest instances (`modelfleet plan`) and score the
hosting options (`modelfleet advise`). Needs the `plan` extra (ortools, matplotlib).

    spec.py / catalog.py   inputs (pydantic, read from YAML with file:line errors)
    profiles.py            models that reference a profile.json (modelfleet profile)
    problem.py             the inputs resolved into integer demands and capacities per type
    bound.py               lower bounds: the LP (dual, Kelley's cutting planes), the MIP per group
    heuristic.py, fill.py  type choice, knapsack / dot-product / first-fit packing (bins.py: Bin)
    improve.py             local improvement: drain, merge, downsize
    exact.py               CP-SAT: counts of identical models; (model, instance) assignment
    cores.py               models onto accelerator cores
    solve.py               which to run; result.py the plan; report.py, charts.py its outputs
    simulate.py            discrete-event simulation of a plan (simreport.py: its outputs)
    advise.py              hosting options on seed 001's fitness functions, grouping check
"""
