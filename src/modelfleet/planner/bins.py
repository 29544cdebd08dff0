"""An instance being packed: its type, isolation group, models and load (shared by the packers)."""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.planner.problem import Int64Array


@dataclass(slots=True)
class Bin:
    type: int
    group: int
    members: list[int]
    load: Int64Array  # [D] on its type
