"""`modelfleet profile` and `modelfleet recommend`: measure a model's configurations on this machine,
then pick the cheapest configuration, instance type and instance count that meets a rate and an SLO.

The public API, for the other tools (the planner reads profiles): the profile.json schema, its
reader, the rule a capacity is read by (`capacity_step`, `best_measurement`) and the input error.
Everything else here is the package's own (the CLI imports its modules directly).

schema     profile.json and the declared profiles YAML (versioned, extra=forbid)
machine    the machine line and a model version's digest
sweep      the configuration space: the grid, and its neighbours for the quick search
search     brute force and coordinate-descent search over the space
profile    one configuration measured: a server subprocess and a closed-loop concurrency ramp
chart      latency-throughput curves per configuration (matplotlib, imported when drawn)
recommend  capacity rows x prices -> ranked recommendations
sources    where the rows come from: profile.json beside a version, or a declared YAML; warnings
apply      the chosen settings written into config.yaml (diff first)
"""

from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.schema import Measurement, Percentile, Profile, Step, best_measurement, capacity_step
from modelfleet.tune.sources import load_profile

__all__ = [
    "Measurement",
    "Percentile",
    "Profile",
    "Step",
    "TuneInputError",
    "best_measurement",
    "capacity_step",
    "load_profile",
]
