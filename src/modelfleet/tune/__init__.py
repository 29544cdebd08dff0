"""`modelfleet profile` and `modelfleet recommend`: measure a model's configurations on this machine,
then pick the cheapest configuration, instance type and instance count that meets a rate and an SLO.

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
