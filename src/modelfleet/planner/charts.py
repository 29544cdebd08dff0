"""PNG charts of a plan (matplotlib, Agg backend): packing per instance and cost by instance type."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import ModuleType

from modelfleet.planner.result import Plan

_MAX_BARS = 300  # instances drawn in the packing chart (the most loaded first beyond that)


def pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def packing_chart(plan: Plan, path: Path) -> None:
    """Per instance: memory and compute use, as bars stacked by model (up to _MAX_BARS instances)."""
    plt = pyplot()
    instances = plan.instances[:_MAX_BARS]
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.06 * len(instances) + 4), 6.5), sharex=True)
    from matplotlib.collections import PolyCollection

    for row, (ax, label) in enumerate(((axes[0], "memory use"), (axes[1], "compute use"))):
        # one rectangle per model, stacked per instance; one collection draws thousands quickly
        boxes, colors = [], []
        for k, inst in enumerate(instances):
            level = 0.0
            for j, share in enumerate(inst.shares):
                top = level + share[row]
                boxes.append([(k - 0.42, level), (k + 0.42, level), (k + 0.42, top), (k - 0.42, top)])
                colors.append(plt.cm.tab20(j % 20))
                level = top
        ax.add_collection(PolyCollection(boxes, facecolors=colors, linewidths=0))
        ax.set_xlim(-1, len(instances))
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_ylabel(f"{label} (fraction)")
        ax.set_ylim(0, 1.1)
    axes[1].set_xlabel(
        "instance"
        + (f" (first {_MAX_BARS} of {len(plan.instances)})" if len(plan.instances) > _MAX_BARS else "")
    )
    fig.suptitle(
        f"Packing: {plan.models:,} models on {len(plan.instances)} instances, ${plan.cost_per_hour:,.3f}/h"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_chart(plan: Plan, path: Path) -> None:
    """$/h per instance type, with the count on each bar."""
    plt = pyplot()
    counts = Counter(i.type for i in plan.instances)
    price = {i.type: i.usd_per_hour for i in plan.instances}
    names = sorted(counts, key=lambda n: -counts[n] * price[n])
    costs = [counts[n] * price[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 2))
    bars = ax.barh(names, costs, color="tab:blue")
    for bar, name in zip(bars, names, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {counts[name]} x ${price[name]:.4g}",
            va="center",
        )
    ax.invert_yaxis()
    ax.set_xlabel("$ per hour")
    ax.set_title(
        f"Cost by instance type: ${plan.cost_per_hour:,.3f}/h (bound ${plan.lower_bound_cost_per_hour:,.3f}/h)"
    )
    ax.set_xlim(0, max(costs) * 1.35)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
