"""Synthetic heterogeneous fleets for the examples, the tests and benchmarks/planner.py.

Sizes are log-uniform over a `spread` (100x by default), traffic follows a Zipf popularity over a
random order, the top 1 % by traffic get 2 replicas, and a share of the models form a second
isolation group. Throughput per core falls with size; latency grows with it, so the largest models
miss the SLO on the slower types (and those types are left out for them).
"""

from __future__ import annotations

import math

import numpy as np

from modelfleet.planner.catalog import load_catalog
from modelfleet.planner.spec import Capacity, FleetSpec, ModelSpec, Options, Slo

DEFAULT_TYPES = (
    "c7i.2xlarge",
    "c7i.4xlarge",
    "c7a.2xlarge",
    "m7i.2xlarge",
    "m7i.4xlarge",
    "r7i.2xlarge",
    "r7i.4xlarge",
    "inf2.xlarge",
    "inf2.8xlarge",
    "g5.xlarge",
)
# family -> (requests/s per core for a 1 GB model, latency in ms for a 1 GB model)
_SPEED = {
    "c7i": (6.0, 40.0),
    "c7a": (6.5, 38.0),
    "m7i": (5.5, 42.0),
    "r7i": (5.0, 45.0),
    "inf2": (120.0, 6.0),
    "g5": (200.0, 5.0),
}


def heterogeneous_fleet(
    n_models: int,
    *,
    seed: int = 0,
    types: tuple[str, ...] = DEFAULT_TYPES,
    smallest_bytes: int = 50_000_000,
    spread: float = 100.0,
    mean_rps: float = 1.0,
    zipf_s: float = 1.1,
    isolated_share: float = 0.2,
    slo_ms: float = 100.0,
) -> FleetSpec:
    rng = np.random.default_rng(seed)
    sizes = smallest_bytes * np.exp(rng.uniform(0.0, np.log(spread), n_models))
    weights = 1.0 / np.arange(1, n_models + 1) ** zipf_s
    traffic = rng.permutation(weights / weights.sum() * mean_rps * n_models)
    top = set(np.argsort(-traffic)[: max(1, n_models // 100)].tolist())
    isolated = rng.random(n_models) < isolated_share
    # what one replica may use: the whole instance on a CPU type, one core on an accelerator
    catalog = load_catalog().by_name()
    cores = {name: 1 if catalog[name].accelerators else catalog[name].cores for name in types}
    models = []
    for i in range(n_models):
        gb = sizes[i] / 1e9
        capacity = {}
        fastest = 0.0
        for name in types:
            family = name.split(".")[0]
            per_core, latency = _SPEED[family]
            rps = round(per_core / gb**0.8, 3)
            capacity[name] = Capacity(rps_per_core=rps, latency_ms=round(latency * gb, 3))
            if latency * gb <= slo_ms:
                fastest = max(fastest, rps * cores[name])
        # the top 1 % get 2 replicas; any model too busy for one replica on its fastest type gets more
        replicas = max(2 if i in top else 1, math.ceil(traffic[i] / (0.7 * fastest)) if fastest > 0 else 1)
        accelerated = int(sizes[i])
        models.append(
            ModelSpec(
                name=f"model-{i:05d}",
                memory_bytes=int(sizes[i]),
                accelerator_memory_bytes=accelerated,
                traffic_rps=round(float(traffic[i]), 6),
                replicas=replicas,
                isolation_group="regulated" if isolated[i] else None,
                capacity=capacity,
            )
        )
    return FleetSpec(slo=Slo(latency_ms=slo_ms), models=models, options=Options(headroom=0.1))


def spec_document(spec: FleetSpec) -> dict[str, object]:
    """The spec as plain data for YAML, without the fields left at their defaults."""
    return spec.model_dump(mode="json", exclude_defaults=True)
