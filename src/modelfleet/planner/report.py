"""The plan as the terminal shows it (rich), and as plan.yaml / --json hold it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelfleet.planner.result import Plan, plan_document


def print_plan(plan: Plan, console: Console) -> None:
    table = Table(
        title=f"Fleet plan: {plan.models:,} models, {plan.replicas:,} replicas", title_justify="left"
    )
    for header in (
        "instance type",
        "count",
        "models / instance",
        "memory use",
        "compute use",
        "$/h each",
        "$/h",
    ):
        table.add_column(header, justify="left" if header == "instance type" else "right")
    groups: dict[str, list[int]] = defaultdict(list)
    for k, inst in enumerate(plan.instances):
        groups[inst.type].append(k)
    for name, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        insts = [plan.instances[k] for k in members]
        sizes = [len(i.models) for i in insts]
        spread = str(sizes[0]) if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
        mem = sum(i.use["memory"] for i in insts) / len(insts)
        comp = sum(max(i.use["compute"], i.use["slots"]) for i in insts) / len(insts)
        price = insts[0].usd_per_hour
        table.add_row(
            name,
            str(len(insts)),
            spread,
            f"{mem:.0%}",
            f"{comp:.0%}",
            f"{price:.4g}",
            f"{price * len(insts):,.3f}",
        )
    console.print(table)
    million = plan.cost_per_million_inferences
    lines = [
        f"cost            ${plan.cost_per_hour:,.3f}/h  (${plan.cost_per_model_hour:.4f} per model-hour"
        + (f", ${million:.3f} per million inferences at {plan.traffic_rps:,.0f} req/s)" if million else ")"),
        f"lower bound     ${plan.lower_bound_cost_per_hour:,.3f}/h  gap {plan.gap:.2%}  ({plan.status.value})",
        f"solver          {plan.solver}, {plan.solve_time_s:.2f} s",
    ]
    lines += [f"note            {note}" for note in plan.notes]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def write_plan_yaml(plan: Plan, path: Path) -> None:
    path.write_text(yaml.safe_dump(plan_document(plan), sort_keys=False, width=120), encoding="utf-8")


def _time_share(task: Task) -> float:
    return min(1.0, (task.elapsed or 0.0) / task.total) if task.total else 0.0


class _TimeBar(ProgressColumn):
    """A bar over the solver's time limit (solvers stop at it, or earlier once proven)."""

    def render(self, task: Task) -> ProgressBar:
        return ProgressBar(total=1.0, completed=_time_share(task), width=30)


class _TimePercent(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{_time_share(task):>4.0%} of the time limit")


def solve_progress(console: Console, disable: bool) -> Progress:
    """The progress bar of `modelfleet plan`: spinner, stage or best plan so far, share of the time
    limit spent (a task's total is the limit in seconds), elapsed time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        _TimeBar(),
        _TimePercent(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disable,
    )
