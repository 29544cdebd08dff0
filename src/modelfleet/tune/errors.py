"""The one error of the tune package: input that cannot be used, said plainly (the CLI exits 2)."""

from __future__ import annotations


class TuneInputError(Exception):
    """A missing or malformed file, an unknown model or instance type, an SLO nobody meets."""
