"""`modelfleet top`: a live terminal view of a running server, built only on its public HTTP API
(/v2, /v2/models/stats, /metrics, /v2/workers); textual is imported by `app` alone."""
