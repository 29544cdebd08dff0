"""Worker processes per device: typed messages, the worker loop, supervision and routing.

`--workers N` moves models out of the server process into N spawned workers; the front keeps the
transports and routes each request to a worker holding its model (see docs/architecture.md).
"""
