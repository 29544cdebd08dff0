"""The compile tools' errors, each carrying the command's exit status.

CompileError (exit 1)      bad input: not a model, truncated weights, pickle refused, exporter failure
├── GateFailed (exit 1)    the compiled model's numerics crossed a threshold; the report is kept
└── Unsupported (exit 2)   a target or precision this machine or target cannot run (SDK, GPU absent)
"""

from __future__ import annotations


class CompileError(Exception):
    """A compile or import that cannot go on; the message says why and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class GateFailed(CompileError):
    """The accuracy gate refused the compiled model."""


class Unsupported(CompileError):
    """The target, precision or format cannot be produced or run here."""

    exit_code = 2
