"""A simulation as the terminal shows it (rich), as plain data (--json, simulation.json) and as a PNG."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from modelfleet.planner.simulate import Simulation


def simulation_document(sim: Simulation) -> dict[str, Any]:
    return {
        "rate_rps": sim.rate_rps,
        "duration_s": sim.duration_s,
        "zipf_s": sim.zipf_s,
        "seed": sim.seed,
        "requests": sim.requests,
        "p50_ms": round(sim.p50_ms, 3),
        "p90_ms": round(sim.p90_ms, 3),
        "p99_ms": round(sim.p99_ms, 3),
        "mean_ms": round(sim.mean_ms, 3),
        "max_utilisation": round(sim.max_utilisation, 4),
        "overloaded_instances": len(sim.overloaded),
        "instances": [
            {
                "type": i.type,
                "models": i.models,
                "requests": i.requests,
                "utilisation": round(i.utilisation, 4),
                "offered": round(i.offered, 4),
                "p90_ms": None if i.p90_ms is None else round(i.p90_ms, 3),
                "mean_batch": round(i.mean_batch, 3),
            }
            for i in sim.instances
        ],
    }


def print_simulation(sim: Simulation, console: Console) -> None:
    table = Table(
        title=(
            f"Simulation: {sim.rate_rps:,.0f} req/s, Zipf {sim.zipf_s:g}, {sim.duration_s:g} s, "
            f"seed {sim.seed} ({sim.requests:,} requests measured)"
        ),
        title_justify="left",
    )
    for header in (
        "instance type",
        "count",
        "requests",
        "utilisation mean",
        "max",
        "P90 ms worst",
        "overloaded",
    ):
        table.add_column(header, justify="left" if header == "instance type" else "right")
    groups: dict[str, list[int]] = defaultdict(list)
    for k, inst in enumerate(sim.instances):
        groups[inst.type].append(k)
    over = set(sim.overloaded)
    for name, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        rows = [sim.instances[k] for k in members]
        use = [r.utilisation for r in rows]
        p90 = [r.p90_ms for r in rows if r.p90_ms is not None]
        table.add_row(
            name,
            str(len(rows)),
            f"{sum(r.requests for r in rows):,}",
            f"{np.mean(use):.1%}",
            f"{max(use):.1%}",
            f"{max(p90):,.1f}" if p90 else "-",
            str(sum(k in over for k in members)),
        )
    console.print(table)
    line = f"latency         P50 {sim.p50_ms:,.1f} ms  P90 {sim.p90_ms:,.1f} ms  P99 {sim.p99_ms:,.1f} ms"
    console.print(line, highlight=False)
    if over:
        console.print(
            f"[yellow]{len(over)} instance(s) offered more work than they can do: their queues grow "
            "for as long as the traffic lasts (add replicas for the hottest models)[/yellow]"
        )


def simulation_chart(sim: Simulation, path: Path) -> None:
    """Latency distribution (log scale) with P50/P90/P99, and utilisation per instance, sorted."""
    from modelfleet.planner.charts import pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    data = np.maximum(sim.latencies_ms, 1e-3)
    bins = np.logspace(np.log10(data.min()), np.log10(data.max() * 1.01), 60)
    left.hist(data, bins=bins, color="tab:blue")
    left.set_xscale("log")
    for value, label, color in (
        (sim.p50_ms, "P50", "green"),
        (sim.p90_ms, "P90", "orange"),
        (sim.p99_ms, "P99", "red"),
    ):
        left.axvline(value, color=color, linestyle="--", label=f"{label} {value:,.1f} ms")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("requests")
    left.legend()
    use = sorted((i.utilisation for i in sim.instances), reverse=True)
    right.bar(range(len(use)), use, color="tab:orange", width=1.0)
    right.set_ylim(0, 1.05)
    right.set_xlabel("instance (most used first)")
    right.set_ylabel("utilisation")
    fig.suptitle(f"Simulated {sim.rate_rps:,.0f} req/s, Zipf {sim.zipf_s:g}, {len(sim.instances)} instances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
