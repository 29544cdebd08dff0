"""`--plot FILE.png`: a run over time (throughput and latency percentiles, phase boundaries, the
threshold that stopped it) and, for a user ramp, latency against throughput. Needs matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from modelfleet.bench.stats import BenchResult


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'modelfleet[bench]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def plot_run(result: BenchResult, path: Path, title: str) -> None:
    """Write the run's chart to `path` (PNG)."""
    plt = _pyplot()
    closed, opened = result.closed_loop, result.open_loop
    ramp = closed is not None and len({s.users for s in closed.series}) > 1
    fig, axes = plt.subplots(3 if ramp else 2, 1, figsize=(9, 9 if ramp else 6.5), squeeze=False)
    rate_ax, latency_ax = axes[0][0], axes[1][0]
    boundaries: list[float] = []
    if closed is not None:
        t = [s.t_s + 0.5 for s in closed.series]  # a second's figures drawn at its middle
        rate_ax.plot(t, [s.ok / s.length_s for s in closed.series], label="answers/s", color="tab:blue")
        rate_ax.plot(t, [s.errors / s.length_s for s in closed.series], label="errors/s", color="tab:red")
        users_ax = rate_ax.twinx()
        users_ax.step(t, [s.users for s in closed.series], where="mid", color="tab:gray", label="users")
        users_ax.set_ylabel("users")
        for name, style in (("p50", ":"), ("p90", "-"), ("p99", "--")):
            latency_ax.plot(t, [_nan(getattr(s, f"{name}_ms")) for s in closed.series], style, label=name)
        boundaries = [p.start_s for p in closed.phases[1:]]
        if closed.stopped is not None:
            for ax in (rate_ax, latency_ax):
                ax.axvline(closed.stopped.at_s, color="tab:red", linewidth=1.5)
            latency_ax.set_title(
                f"stopped: {closed.stopped.reason} {closed.stopped.value:.4g} > {closed.stopped.limit:.4g}",
                fontsize=9,
                loc="right",
            )
        if ramp:
            scatter = axes[2][0]
            points = [s for s in closed.series if s.ok]
            rates = [s.ok / s.length_s for s in points]
            scatter.scatter(rates, [s.p90_ms for s in points], c=[s.users for s in points])
            scatter.set_xlabel("answers/s (one point per second, colour: users)")
            scatter.set_ylabel("P90 ms")
            scatter.grid(alpha=0.3)
    elif opened is not None:
        t = [s.t_s + 0.5 for s in opened.series]
        rate_ax.plot(t, [s.sent for s in opened.series], label="sent/s")
        rate_ax.plot(t, [s.ok for s in opened.series], label="2xx/s")
        latency_ax.plot(t, [_nan(s.ok_p99_ms) for s in opened.series], "--", label="p99 (from schedule)")
        boundaries = [p.start_s for p in opened.phases[1:]]
    for ax in (rate_ax, latency_ax):
        for b in boundaries:
            ax.axvline(b, color="black", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    rate_ax.set_ylabel("per second")
    rate_ax.set_title(title, fontsize=10)
    latency_ax.set_ylabel("latency ms")
    latency_ax.set_xlabel("seconds into the record (dotted: phase boundaries)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
