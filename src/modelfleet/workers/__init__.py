"""Worker processes per device: typed messages, the worker loop, supervision and routing."""
