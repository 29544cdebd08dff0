"""modelfleet: serve hundreds to thousands of ML models from a few machines, fast and cheaply."""

__version__ = "0.1.0"
