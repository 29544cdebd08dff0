"""The plan's progress bar: a share of the solver's time limit, with its percentage."""

from __future__ import annotations

import io

from rich.console import Console

from modelfleet.planner.report import solve_progress


def rendered(total_s: float) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with solve_progress(console, disable=False) as bar:
        bar.add_task("planning 10 models", total=total_s)
        console.print(bar.get_renderable())
    return out.getvalue()


def test_the_bar_shows_the_share_of_the_time_limit_spent() -> None:
    assert "100% of the time limit" in rendered(1e-9)  # any elapsed time is past a nanosecond
    assert "  0% of the time limit" in rendered(1e9)
    assert "planning 10 models" in rendered(1e9)
