"""`modelfleet cluster`: a planner's plan.yaml run on this machine, one `modelfleet serve` per planned
instance behind a local nginx rendered from the Kubernetes router's template (deploy/router.py)."""
