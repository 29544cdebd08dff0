"""The planner's errors: every bad input is a `PlanInputError` naming the file, line, field and models.

    BadRequest (modelfleet.errors, 400)
    └── PlanInputError         a fleet spec or catalogue that cannot be read, or asks the impossible
        ├── InfeasiblePlan     valid inputs whose constraints no fleet satisfies (the solver proved it)
        └── NoPlanFound        no fleet found within the time limit, and none proven impossible

The CLI turns both into exit status 2 before anything is written.
"""

from __future__ import annotations

from modelfleet.errors import BadRequest


class PlanInputError(BadRequest):
    """A fleet spec or catalogue that cannot be planned; the message names what and where."""


class InfeasiblePlan(PlanInputError):
    """No fleet satisfies the constraints (proven by the solver or by a counting argument)."""


class NoPlanFound(PlanInputError):
    """The solvers found no fleet within the time limit, and did not prove that none exists."""
